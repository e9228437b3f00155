//! A tiny blocking HTTP client for tests that talk to the fake DevRev directly (reqwest's blocking
//! feature is off, so each call runs on a throwaway current-thread runtime).

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use devrev_fake::FakeServer;

/// An answer: status, headers, raw bytes and (when it parses) JSON.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Resp {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

/// Sends one request. `auth` is the whole `Authorization` value; `body` None = GET.
/// Transport errors (refused, dropped connection, timeout) come back as `Err(text)`.
pub fn send(url: &str, auth: Option<&str>, body: Option<&Value>) -> Result<Resp, String> {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    send_with(url, &headers, body)
}

/// Like `send`, with any headers.
pub fn send_with(
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Resp, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = match body {
            Some(b) => client.post(url).json(b),
            None => client.get(url),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| format!("{e:?}"))?.to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            bytes,
            json,
        })
    })
}

/// Calls the fake's API with its token.
pub struct Probe {
    pub base: String,
    pub token: String,
}

impl Probe {
    pub fn new(fake: &FakeServer) -> Probe {
        Probe {
            base: fake.base_url(),
            token: fake.token(),
        }
    }

    /// POST `/<endpoint>` with `Bearer <token>`; panics on a transport error.
    pub fn call(&self, endpoint: &str, body: Value) -> Resp {
        match self.try_call(endpoint, body) {
            Ok(r) => r,
            Err(e) => panic!("{endpoint}: transport error: {e}"),
        }
    }

    pub fn try_call(&self, endpoint: &str, body: Value) -> Result<Resp, String> {
        let auth = format!("Bearer {}", self.token);
        send(
            &format!("{}/{endpoint}", self.base),
            Some(&auth),
            Some(&body),
        )
    }

    /// GET `/<path_and_query>` with `Bearer <token>`; panics on a transport error.
    pub fn get(&self, path_and_query: &str) -> Resp {
        let auth = format!("Bearer {}", self.token);
        match send(
            &format!("{}/{path_and_query}", self.base),
            Some(&auth),
            None,
        ) {
            Ok(r) => r,
            Err(e) => panic!("GET {path_and_query}: transport error: {e}"),
        }
    }
}
