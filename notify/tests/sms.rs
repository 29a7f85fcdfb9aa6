//! The SMS adapters against a local HTTP server standing in for the
//! provider (their endpoints are configurable): the request each sends
//! carries the signature the provider would recompute from what it
//! received — the same signing the unit tests check against Alibaba's and
//! Tencent's published examples — and each provider's answer maps to
//! sent, a transient failure (retried) or a permanent one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lectern_notify::transport::aliyun::{self, AliyunSms};
use lectern_notify::transport::tencent::{self, TencentSms};
use lectern_notify::transport::{Sms, SmsProviderSettings, SmsTransport};
use lectern_notify::Topic;

#[derive(Clone, Default)]
struct Provider {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    answer: Arc<Mutex<(u16, String)>>,
}

async fn receive(
    State(p): State<Provider>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    p.received.lock().unwrap().push((headers, body));
    let (status, body) = p.answer.lock().unwrap().clone();
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn provider(answer: (u16, &str)) -> (Provider, String) {
    let p = Provider::default();
    *p.answer.lock().unwrap() = (answer.0, answer.1.to_string());
    let app = Router::new()
        .route("/", post(receive))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, format!("http://{addr}"))
}

fn settings(endpoint: &str) -> SmsProviderSettings {
    SmsProviderSettings {
        access_key_id: "test-key-id".into(),
        access_key_secret: "test-key-secret".into(),
        sign_name: "讲堂".into(),
        app_id: Some("1400000000".into()),
        region: None,
        endpoint: Some(endpoint.into()),
        templates: BTreeMap::from([(Topic::StepUpCode, "TPL_1".to_string())]),
        timeout: Duration::from_secs(5),
    }
}

fn code_params() -> BTreeMap<String, String> {
    BTreeMap::from([("code".to_string(), "246810".to_string())])
}

fn sms<'a>(params: &'a BTreeMap<String, String>, topic: Topic) -> Sms<'a> {
    Sms {
        user_id: None,
        to: "+8613800138000",
        topic,
        params,
        text: "unused by template providers",
    }
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    let text = std::str::from_utf8(body).unwrap();
    text.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .to_string()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[tokio::test]
async fn aliyun_sends_a_signed_send_sms_and_reads_the_answer() {
    let (p, endpoint) = provider((200, r#"{"Code":"OK","Message":"OK","BizId":"1"}"#)).await;
    let sender = AliyunSms::new(settings(&endpoint));
    let params = code_params();
    sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap();
    let (_, body) = p.received.lock().unwrap().pop().unwrap();
    let mut fields = form(&body);
    assert_eq!(fields["Action"], "SendSms");
    assert_eq!(fields["PhoneNumbers"], "+8613800138000");
    assert_eq!(fields["SignName"], "讲堂");
    assert_eq!(fields["TemplateCode"], "TPL_1");
    assert_eq!(fields["TemplateParam"], r#"{"code":"246810"}"#);
    let signature = fields.remove("Signature").unwrap();
    // What the provider checks: the signature of everything else it got.
    assert_eq!(
        signature,
        aliyun::signature("POST", &fields, "test-key-secret")
    );

    // Throttled: worth retrying; an unknown template: not.
    *p.answer.lock().unwrap() = (
        200,
        r#"{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"slow down"}"#.into(),
    );
    let e = sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap_err();
    assert!(e.transient, "{e}");
    *p.answer.lock().unwrap() = (
        200,
        r#"{"Code":"isv.SMS_TEMPLATE_ILLEGAL","Message":"no"}"#.into(),
    );
    let e = sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap_err();
    assert!(!e.transient, "{e}");
    assert!(!e.message.contains("246810"), "{e}");
    // A topic without a registered template is never sent.
    let e = sender
        .send_sms(&sms(&params, Topic::CoursePublished))
        .await
        .unwrap_err();
    assert!(
        !e.transient && e.message.contains("course_published"),
        "{e}"
    );
}

#[tokio::test]
async fn tencent_sends_a_tc3_signed_send_sms_and_reads_the_answer() {
    let (p, endpoint) = provider((
        200,
        r#"{"Response":{"SendStatusSet":[{"Code":"Ok","Message":"send success"}],"RequestId":"x"}}"#,
    ))
    .await;
    let sender = TencentSms::new(settings(&endpoint));
    let params = code_params();
    sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap();
    let (headers, body) = p.received.lock().unwrap().pop().unwrap();
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    assert_eq!(header("x-tc-action"), "SendSms");
    assert_eq!(header("x-tc-version"), "2021-01-11");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["TemplateParamSet"], serde_json::json!(["246810"]));
    assert_eq!(json["SmsSdkAppId"], "1400000000");
    assert_eq!(
        json["PhoneNumberSet"],
        serde_json::json!(["+8613800138000"])
    );
    // What Tencent recomputes from the request it received.
    let timestamp: i64 = header("x-tc-timestamp").parse().unwrap();
    let canonical =
        tencent::canonical_request(&header("host"), std::str::from_utf8(&body).unwrap());
    assert_eq!(
        header("authorization"),
        tencent::authorization(
            "test-key-id",
            "test-key-secret",
            timestamp,
            "sms",
            &canonical
        )
    );

    *p.answer.lock().unwrap() = (
        200,
        r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad"},"RequestId":"x"}}"#.into(),
    );
    let e = sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap_err();
    assert!(
        !e.transient && e.message.contains("SignatureFailure"),
        "{e}"
    );
    *p.answer.lock().unwrap() = (503, String::new());
    let e = sender
        .send_sms(&sms(&params, Topic::StepUpCode))
        .await
        .unwrap_err();
    assert!(e.transient, "{e}");
}
