//! Alibaba Cloud SMS (`dysmsapi`, `SendSms`, version 2017-05-25), signed
//! as Alibaba's RPC APIs are: every parameter but `Signature` sorted by
//! name, each name and value percent-encoded (only `A-Z a-z 0-9 - _ . ~`
//! stay literal, space is `%20`), joined as a query; the string to sign is
//! `METHOD&%2F&` + that query percent-encoded again; the signature is
//! Base64(HMAC-SHA1(AccessKeySecret + "&", string to sign)). The tests
//! check it against the values of Alibaba's published examples.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;

use super::{SendError, Sms, SmsProviderSettings, SmsTransport};

/// Alibaba's RPC encoding: RFC 3986 unreserved characters stay.
const RPC: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, RPC).to_string()
}

/// The sorted, encoded query of `params` (without `Signature`).
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

pub fn signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign(method, params).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

pub struct AliyunSms {
    settings: SmsProviderSettings,
    client: reqwest::Client,
}

impl AliyunSms {
    pub const DEFAULT_ENDPOINT: &'static str = "https://dysmsapi.aliyuncs.com";

    pub fn new(settings: SmsProviderSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client builds");
        Self { settings, client }
    }

    /// The parameters of one `SendSms`, with the nonce and timestamp given
    /// (tests fix them; sending uses fresh ones).
    pub fn request(
        &self,
        sms: &Sms<'_>,
        template: &str,
        nonce: &str,
        timestamp: &str,
    ) -> BTreeMap<String, String> {
        let s = &self.settings;
        let template_param =
            serde_json::to_string(sms.params).expect("string parameters serialise");
        [
            ("AccessKeyId", s.access_key_id.as_str()),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("PhoneNumbers", sms.to),
            ("RegionId", s.region.as_deref().unwrap_or("cn-hangzhou")),
            ("SignName", s.sign_name.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", template),
            ("TemplateParam", template_param.as_str()),
            ("Timestamp", timestamp),
            ("Version", "2017-05-25"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: Option<String>,
    message: Option<String>,
}

#[async_trait::async_trait]
impl SmsTransport for AliyunSms {
    async fn send_sms(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        let template = self.settings.template(sms.topic)?;
        let nonce = uuid::Uuid::new_v4().to_string();
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut params = self.request(sms, template, &nonce, &timestamp);
        let sig = signature("POST", &params, &self.settings.access_key_secret);
        params.insert("Signature".into(), sig);
        let endpoint = self
            .settings
            .endpoint
            .as_deref()
            .unwrap_or(Self::DEFAULT_ENDPOINT);
        let response = self
            .client
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(canonical_query(&params))
            .send()
            .await
            .map_err(|e| SendError::transient(format!("aliyun sms: {}", e.without_url())))?;
        let status = response.status();
        let answer: Option<Answer> = response.json().await.ok();
        let (code, message) = answer
            .map(|a| (a.code.unwrap_or_default(), a.message.unwrap_or_default()))
            .unwrap_or_default();
        if status.is_success() && code == "OK" {
            return Ok(());
        }
        let text = format!("aliyun sms: HTTP {} {code} {message}", status.as_u16());
        // Throttling and server trouble pass; a bad template or number does not.
        if status.is_server_error() || code.contains("LIMIT_CONTROL") || code == "Throttling" {
            Err(SendError::transient(text))
        } else {
            Err(SendError::permanent(text))
        }
    }
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

    /// The worked example of Alibaba Cloud's RPC signature documentation
    /// ("Signature mechanism": DescribeRegions, AccessKeySecret `testsecret`).
    #[test]
    fn the_documented_describe_regions_example_signs_as_published() {
        let p = params(&[
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ]);
        assert_eq!(
            string_to_sign("GET", &p),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z\
             %26Version%3D2014-05-26"
        );
        assert_eq!(
            signature("GET", &p, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    /// The SendSms example of Alibaba Cloud SMS's signature documentation
    /// (a Chinese sign name, a JSON template parameter).
    #[test]
    fn the_documented_send_sms_example_signs_as_published() {
        let p = params(&[
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", "{\"customer\":\"test\"}"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]);
        assert_eq!(
            signature("GET", &p, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a b*c~d/é"), "a%20b%2Ac~d%2F%C3%A9");
    }
}
