//! The CLI's client for a hutch (or any E2B-compatible) server's REST API.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) struct Api {
    pub(crate) client: HttpClient,
    pub(crate) base: String,
    key: String,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status >= 300 {
            let msg = json
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            bail!("{path}: HTTP {status}: {msg}");
        }
        Ok((status, json))
    }

    /// A client for `url` (`E2B_API_URL` when `HUTCH_API_URL` is unset) with `api_key` (or
    /// `E2B_API_KEY`).
    pub(crate) fn new(url: &str, api_key: Option<String>) -> Result<Self> {
        let base = std::env::var("E2B_API_URL")
            .ok()
            .filter(|_| std::env::var_os("HUTCH_API_URL").is_none())
            .unwrap_or(url.to_string());
        let key = api_key
            .or_else(|| std::env::var("E2B_API_KEY").ok())
            .ok_or_else(|| {
                anyhow!("no API key: pass --api-key or set HUTCH_API_KEY / E2B_API_KEY")
            })?;
        Ok(Api {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// PUTs `body` to an absolute `url` (an upload link the server gave).
    pub(crate) async fn put(&self, url: &str, body: Vec<u8>) -> Result<()> {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(url)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("uploading to {url}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status >= 300 {
            bail!("upload: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }
}
