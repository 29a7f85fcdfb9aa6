//! Every topic's subject and plain-text body, in zh-CN and English. Text
//! only: no channel renders HTML, so nothing a user wrote (an excerpt, a
//! reason) can become markup. Parameters are inserted as text with
//! control characters removed (a subject never gains a header line) and
//! excerpts shortened. A person without a language preference (an
//! invitee) gets both languages, zh-CN first.

use std::collections::BTreeMap;

use crate::Topic;

/// A person's language for notices.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum Lang {
    #[default]
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh-CN" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// A message ready for a channel.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    /// May hold a one-time code: never log it.
    pub body: String,
}

// The body may hold a secret.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The longest excerpt of a post a notice quotes, in characters.
const EXCERPT_CHARS: usize = 140;

/// Subject and body templates; `{name}` is replaced by the parameter.
fn template(topic: Topic, lang: Lang) -> (&'static str, &'static str) {
    use Lang::{En, ZhCn};
    match (topic, lang) {
        (Topic::Invitation, ZhCn) => (
            "邀请您成为「{org_name}」的专家",
            "您好：\n\n「{org_name}」邀请您在 Lectern 上担任专家。请打开以下链接完成注册：\n\n{link}\n\n链接在 {expires_at} 前有效，只能使用一次。如果您没有预期收到此邀请，请忽略本邮件。",
        ),
        (Topic::Invitation, En) => (
            "You are invited to teach for {org_name}",
            "Hello,\n\n{org_name} invites you to join Lectern as an expert. Open this link to complete your sign-up:\n\n{link}\n\nThe link is valid until {expires_at} and works once. If you did not expect this invitation, ignore this message.",
        ),
        (Topic::StepUpCode, ZhCn) => (
            "Lectern 验证码",
            "您的验证码是 {code}，几分钟内有效。请勿将验证码告诉任何人。",
        ),
        (Topic::StepUpCode, En) => (
            "Your Lectern verification code",
            "Your verification code is {code}. It expires in a few minutes. Never share it with anyone.",
        ),
        (Topic::PhoneCode, ZhCn) => (
            "Lectern 手机验证码",
            "您的手机验证码是 {code}，几分钟内有效，仅可使用一次。请勿将验证码告诉任何人。",
        ),
        (Topic::PhoneCode, En) => (
            "Your Lectern phone code",
            "Your phone code is {code}. It expires in a few minutes and works once. Never share it with anyone.",
        ),
        (Topic::SignUpConfirmation, ZhCn) => (
            "请确认您的 Lectern 账号",
            "请打开以下链接确认您的新账号：\n\n{link}\n\n如果不是您本人申请，请忽略本邮件。",
        ),
        (Topic::SignUpConfirmation, En) => (
            "Confirm your Lectern account",
            "Open this link to confirm your new account:\n\n{link}\n\nIf you did not ask for an account, ignore this message.",
        ),
        (Topic::SignUpAttempted, ZhCn) => (
            "有人尝试用您的邮箱注册",
            "有人尝试用此邮箱创建 Lectern 账号，但该邮箱已有账号。如果是您本人，请直接登录；否则请忽略本邮件，您的账号没有任何变化。",
        ),
        (Topic::SignUpAttempted, En) => (
            "Someone tried to sign up with your address",
            "Someone asked to create a Lectern account with this address, which already has one. If it was you, sign in instead; otherwise ignore this message. Nothing was changed.",
        ),
        (Topic::ModerationOutcome, ZhCn) => (
            "您的{kind}审核结果：{outcome}",
            "您的{kind}「{excerpt}」审核结果：{outcome}。\n原因：{reason}",
        ),
        (Topic::ModerationOutcome, En) => (
            "Your {kind} was {outcome}",
            "Your {kind} \"{excerpt}\" was {outcome}.\nReason: {reason}",
        ),
        (Topic::CourseReviewOutcome, ZhCn) => (
            "课程「{course_title}」审核结果：{outcome}",
            "您的课程「{course_title}」审核结果：{outcome}。\n原因：{reason}",
        ),
        (Topic::CourseReviewOutcome, En) => (
            "Course \"{course_title}\": {outcome}",
            "Your course \"{course_title}\" was {outcome}.\nReason: {reason}",
        ),
        (Topic::QuestionAsked, ZhCn) => (
            "新提问：{course_title}",
            "学员在课程「{course_title}」的「{lesson_title}」中提问：\n\n{excerpt}\n\n回答：{link}",
        ),
        (Topic::QuestionAsked, En) => (
            "New question: {course_title}",
            "A learner asked about \"{lesson_title}\" in \"{course_title}\":\n\n{excerpt}\n\nAnswer: {link}",
        ),
        (Topic::QuestionAnswered, ZhCn) => (
            "您的提问有了回答：{course_title}",
            "专家回答了您在课程「{course_title}」中的提问：\n\n{excerpt}\n\n查看：{link}",
        ),
        (Topic::QuestionAnswered, En) => (
            "Your question was answered: {course_title}",
            "An expert answered your question in \"{course_title}\":\n\n{excerpt}\n\nRead it: {link}",
        ),
        (Topic::AnswerAccepted, ZhCn) => (
            "您的回答被采纳",
            "学员采纳了您的回答：\n\n{excerpt}\n\n查看：{link}",
        ),
        (Topic::AnswerAccepted, En) => (
            "Your answer was accepted",
            "A learner accepted your answer:\n\n{excerpt}\n\nRead it: {link}",
        ),
        (Topic::CoursePublished, ZhCn) => (
            "课程已发布：{course_title}",
            "课程「{course_title}」已发布：{link}",
        ),
        (Topic::CoursePublished, En) => (
            "Course published: {course_title}",
            "The course \"{course_title}\" is published: {link}",
        ),
    }
}

/// Words some parameters take, translated; other values stay as given.
fn word(lang: Lang, value: &str) -> Option<&'static str> {
    Some(match (lang, value) {
        (Lang::ZhCn, "review") => "评价",
        (Lang::ZhCn, "comment") => "评论",
        (Lang::ZhCn, "question") => "提问",
        (Lang::ZhCn, "answer") => "回答",
        (Lang::ZhCn, "approved") => "已通过",
        (Lang::ZhCn, "rejected") => "未通过",
        (Lang::ZhCn, "hidden") => "已隐藏",
        (Lang::ZhCn, "published") => "已发布",
        _ => return None,
    })
}

/// A parameter as it may appear in a message: no control characters
/// (so no line breaks in a subject), excerpts shortened.
fn clean(name: &str, value: &str, lang: Lang) -> String {
    if matches!(name, "kind" | "outcome") {
        if let Some(w) = word(lang, value) {
            return w.to_string();
        }
    }
    let text: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if name == "excerpt" && text.chars().count() > EXCERPT_CHARS {
        let mut short: String = text.chars().take(EXCERPT_CHARS).collect();
        short.push('…');
        return short;
    }
    text
}

fn fill(template: &str, params: &BTreeMap<String, String>, lang: Lang) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match params.get(name) {
                    Some(v) if !v.trim().is_empty() => out.push_str(&clean(name, v, lang)),
                    _ => out.push('—'),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `topic`'s message in `lang`.
pub fn render(topic: Topic, lang: Lang, params: &BTreeMap<String, String>) -> Rendered {
    let (subject, body) = template(topic, lang);
    Rendered {
        subject: fill(subject, params, lang),
        body: fill(body, params, lang),
    }
}

/// `topic`'s message in both languages, zh-CN first: for a person whose
/// language is not known.
pub fn render_bilingual(topic: Topic, params: &BTreeMap<String, String>) -> Rendered {
    let zh = render(topic, Lang::ZhCn, params);
    let en = render(topic, Lang::En, params);
    Rendered {
        subject: format!("{} / {}", zh.subject, en.subject),
        body: format!("{}\n\n----\n\n{}", zh.body, en.body),
    }
}

/// A short text for SMS and the inbox's one-line form: the subject's
/// language, without links to shorten.
pub fn sms_text(topic: Topic, lang: Lang, params: &BTreeMap<String, String>) -> String {
    let r = render(topic, lang, params);
    format!("【Lectern】{}", r.body.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_topic_has_both_languages_and_fills_its_parameters() {
        let all = params(&[
            ("org_name", "医学会"),
            ("link", "https://lectern.example/x"),
            ("expires_at", "2026-12-13"),
            ("code", "123456"),
            ("kind", "comment"),
            ("outcome", "rejected"),
            ("reason", "off topic"),
            ("excerpt", "hello"),
            ("course_title", "Cardiology"),
            ("lesson_title", "ECG"),
        ]);
        for topic in Topic::ALL {
            for lang in [Lang::ZhCn, Lang::En] {
                let r = render(topic, lang, &all);
                assert!(!r.subject.is_empty() && !r.body.is_empty());
                assert!(
                    !r.subject.contains('{') && !r.body.contains('{'),
                    "{topic:?}"
                );
                assert!(
                    !r.body.contains('—'),
                    "{topic:?} {lang:?} misses a parameter"
                );
            }
        }
        let zh = render(Topic::ModerationOutcome, Lang::ZhCn, &all);
        assert!(zh.subject.contains("评论") && zh.subject.contains("未通过"));
        assert!(render(Topic::StepUpCode, Lang::En, &all)
            .body
            .contains("123456"));
    }

    #[test]
    fn parameters_cannot_add_lines_to_a_subject_and_excerpts_are_short() {
        let p = params(&[
            ("course_title", "A\r\nBcc: victim@example.org"),
            ("link", "x"),
            ("excerpt", &"长".repeat(500)),
        ]);
        let r = render(Topic::CoursePublished, Lang::En, &p);
        assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
        let q = render(Topic::QuestionAnswered, Lang::ZhCn, &p);
        assert!(q.body.chars().filter(|c| *c == '长').count() == EXCERPT_CHARS);
        let both = render_bilingual(Topic::Invitation, &p);
        assert!(both.body.find("您好").unwrap() < both.body.find("Hello").unwrap());
    }
}
