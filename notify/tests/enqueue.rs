//! `enqueue` against a real PostgreSQL: the notice, its inbox item and
//! its deliveries exist iff the caller's transaction commits; secret
//! topics never reach the inbox; preferences choose the channels.

use std::collections::BTreeMap;

use lectern_notify::{enqueue, enqueue_sealed, Notification, Recipient, Topic};
use lectern_secrets::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

async fn person(db: &PgPool) -> (Uuid, Uuid) {
    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, 'Org')")
        .bind(org)
        .execute(db)
        .await
        .unwrap();
    let user = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, org_id, role, email_ct, email_bidx, key_id, password_hash) \
         VALUES ($1, $2, 'learner', '\\x00', $3, 'k', 'x')",
    )
    .bind(user)
    .bind(org)
    .bind(user.as_bytes().to_vec())
    .execute(db)
    .await
    .unwrap();
    (org, user)
}

fn notice(org: Uuid, user: Uuid, topic: Topic) -> Notification {
    Notification {
        org_id: Some(org),
        user_id: Some(user),
        to: None,
        topic,
        params: BTreeMap::from([("course_title".into(), "Cardiology".into())]),
    }
}

async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_notice_exists_iff_the_transaction_commits(db: PgPool) {
    let (org, user) = person(&db).await;
    let mut tx = db.begin().await.unwrap();
    enqueue(&mut tx, &notice(org, user, Topic::CoursePublished))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let inbox = "SELECT count(*) FROM inbox_items WHERE user_id = $1";
    assert_eq!(count(&db, inbox, user).await, 0);

    let mut tx = db.begin().await.unwrap();
    let id = enqueue(&mut tx, &notice(org, user, Topic::CoursePublished))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db, inbox, user).await, 1);
    let deliveries = "SELECT count(*) FROM notification_deliveries WHERE notification_id = $1";
    // Defaults: inbox and e-mail, no SMS.
    assert_eq!(count(&db, deliveries, id).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn secret_topics_skip_the_inbox_and_are_sealed(db: PgPool) {
    let (org, user) = person(&db).await;
    let (a, b, c) = Keyring::generate_settings();
    let keys = Keyring::parse(&a, &b, &c).unwrap();
    let mut conn = db.acquire().await.unwrap();
    let mut n = notice(org, user, Topic::StepUpCode);
    n.params = BTreeMap::from([("code".into(), "424242".into())]);
    let id = enqueue_sealed(&mut conn, &keys, &n).await.unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM inbox_items WHERE user_id = $1",
            user
        )
        .await,
        0
    );
    let stored: String = sqlx::query_scalar(
        "SELECT coalesce(payload::text, '') || encode(payload_ct, 'escape') FROM notifications WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(!stored.contains("424242"));
}

#[sqlx::test(migrations = "../migrations")]
async fn preferences_choose_channels_but_mandatory_mail_stays(db: PgPool) {
    let (org, user) = person(&db).await;
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, email_off, sms_on, inbox_off) \
         VALUES ($1, '{course_published,step_up_code}', '{course_published}', '{course_published}')",
    )
    .bind(user)
    .execute(&db)
    .await
    .unwrap();
    let mut conn = db.acquire().await.unwrap();
    let published = enqueue(&mut conn, &notice(org, user, Topic::CoursePublished))
        .await
        .unwrap();
    let channels: Vec<String> = sqlx::query_scalar(
        "SELECT channel FROM notification_deliveries WHERE notification_id = $1",
    )
    .bind(published)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(channels, vec!["sms".to_string()]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM inbox_items WHERE user_id = $1",
            user
        )
        .await,
        0
    );
    let code = enqueue(&mut conn, &notice(org, user, Topic::StepUpCode))
        .await
        .unwrap();
    let channels: Vec<String> = sqlx::query_scalar(
        "SELECT channel FROM notification_deliveries WHERE notification_id = $1",
    )
    .bind(code)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(channels, vec!["email".to_string()]);
    // An invitee without an account: only the explicit address.
    let invite = enqueue(
        &mut conn,
        &Notification {
            org_id: Some(org),
            user_id: None,
            to: Some(Recipient::Email("new@example.org".into())),
            topic: Topic::Invitation,
            params: BTreeMap::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM notification_deliveries WHERE notification_id = $1 AND channel = 'email'",
            invite
        )
        .await,
        1
    );
}
