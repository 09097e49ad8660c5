//! `ringtail healthcheck` and `ringtail shutdown`: the two HTTP requests a container
//! runtime makes to a node, done by the binary itself so that images without a shell or
//! curl (the scratch image of `scripts/build-image.sh`) can run them: a Docker/Compose
//! `healthcheck`, a Kubernetes exec probe, a Kubernetes `preStop` hook.
//!
//! Both talk to the node's admin API. Without `--url` the address comes from
//! `http_listen` read the way the node reads it (config file, `RINGTAIL_HTTP_LISTEN`,
//! flag; default port 3200): its port on 127.0.0.1, or its IP when the node listens on
//! one specific address.
//!
//! Exit codes: 0 when the node answered as wanted, 1 otherwise (Docker's "unhealthy"),
//! 2 when the config cannot be read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringtail::config::RawConfig;
use ringtail::PeerHttp;

#[derive(clap::Args, Debug)]
pub(crate) struct HealthcheckArgs {
    /// URL to GET [default: http://127.0.0.1:<http_listen port>/ready]
    #[arg(long)]
    url: Option<String>,
    /// Give up after this long (ms)
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ShutdownArgs {
    /// URL to POST [default: http://127.0.0.1:<http_listen port>/shutdown]
    #[arg(long)]
    url: Option<String>,
    /// Give up on the request after this long (ms)
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Then wait up to this long (ms) until the node stops answering HTTP (it has
    /// drained, flushed and stopped its servers); 0: return once the node accepted
    #[arg(long, default_value_t = 0)]
    wait_ms: u64,
}

/// GETs the node's `/ready`; exit 0 on 200.
pub(crate) async fn healthcheck(
    args: HealthcheckArgs,
    config: Option<&Path>,
    flags: &RawConfig,
) -> ExitCode {
    let Target { url, client, .. } =
        match target(args.url, config, flags, "/ready", args.timeout_ms) {
            Ok(target) => target,
            Err(code) => return code,
        };
    match client.get(&url).send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            println!("{url}: {}", resp.status());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            println!("{url}: {status} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{url}: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// POSTs the node's `/shutdown` (the same sequence as SIGTERM); exit 0 when it was
/// accepted and, with `--wait-ms`, the node stopped answering in time.
pub(crate) async fn shutdown(
    args: ShutdownArgs,
    config: Option<&Path>,
    flags: &RawConfig,
) -> ExitCode {
    let Target {
        url,
        client,
        admin_token,
    } = match target(args.url, config, flags, "/shutdown", args.timeout_ms) {
        Ok(target) => target,
        Err(code) => return code,
    };
    let mut request = client.post(&url);
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(resp) if resp.status().is_success() => println!("{url}: {}", resp.status()),
        Ok(resp) => {
            println!("{url}: {}", resp.status());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("{url}: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    }
    if args.wait_ms == 0 {
        return ExitCode::SUCCESS;
    }
    // The node keeps answering while it drains and flushes; its servers stop at step 5
    // of the shutdown sequence, after which a request fails to connect.
    let deadline = Instant::now() + Duration::from_millis(args.wait_ms);
    while Instant::now() < deadline {
        if client.get(&url).send().await.is_err() {
            println!("{url}: the node stopped answering");
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{url}: still answering after {} ms", args.wait_ms);
    ExitCode::FAILURE
}

/// Where to send a probe and with what.
struct Target {
    url: String,
    client: reqwest::Client,
    /// From the same config, flags or environment the node reads (`RINGTAIL_ADMIN_TOKEN`,
    /// which the chart sets from its Secret).
    admin_token: Option<String>,
}

/// The URL to call (`--url`, else the local node's admin API at `path`), a client and
/// the admin token. The config is read once; with `--url` a config that does not load
/// is no error (the URL is all the probe needs).
fn target(
    url: Option<String>,
    config: Option<&Path>,
    flags: &RawConfig,
    path: &str,
    timeout_ms: u64,
) -> Result<Target, ExitCode> {
    let loaded = RawConfig::load(config, flags);
    let (url, raw, http) = match url {
        Some(url) => {
            let raw = loaded.ok();
            let http = peer_http(raw.as_ref(), timeout_ms)?;
            (url, raw, http)
        }
        None => {
            let raw = loaded.map_err(|e| {
                eprintln!("ringtail: {e}");
                ExitCode::from(2)
            })?;
            let http = peer_http(Some(&raw), timeout_ms)?;
            (local_admin_url(&raw, &http, path), Some(raw), http)
        }
    };
    let admin_token = raw
        .as_ref()
        .and_then(|raw| raw.admin_token.as_deref())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Ok(Target {
        url,
        client: http.client().clone(),
        admin_token,
    })
}

/// The client for the node's HTTP API: HTTPS, checked the way its peers check it, when
/// the config says the API speaks TLS.
fn peer_http(raw: Option<&RawConfig>, timeout_ms: u64) -> Result<PeerHttp, ExitCode> {
    let tls = match raw.map(RawConfig::http_tls).transpose() {
        Ok(tls) => tls.flatten(),
        Err(e) => {
            eprintln!("ringtail: {e}");
            return Err(ExitCode::from(2));
        }
    };
    PeerHttp::new(tls.as_ref(), Duration::from_millis(timeout_ms)).map_err(|e| {
        println!("{e}");
        ExitCode::FAILURE
    })
}

/// `e: its source: its source ...` (reqwest's own message omits the cause, e.g. "connection
/// refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `http(s)://<ip>:<port><path>` of the node's admin API, from its `http_listen`.
fn local_admin_url(raw: &RawConfig, http: &PeerHttp, path: &str) -> String {
    let listen = raw
        .http_listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3200)));
    let ip = match listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    http.url(SocketAddr::new(ip, listen.port()), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(http_listen: Option<&str>) -> RawConfig {
        RawConfig {
            http_listen: http_listen.map(|a| a.parse().expect("socket address")),
            ..RawConfig::default()
        }
    }

    #[test]
    fn the_default_url_is_the_http_listen_port_on_loopback_or_its_specific_ip() {
        let plain = peer_http(Some(&flags(None)), 1000).expect("client");
        assert_eq!(
            local_admin_url(&flags(None), &plain, "/ready"),
            "http://127.0.0.1:3200/ready"
        );
        assert_eq!(
            local_admin_url(&flags(Some("0.0.0.0:8080")), &plain, "/shutdown"),
            "http://127.0.0.1:8080/shutdown"
        );
        assert_eq!(
            local_admin_url(&flags(Some("10.1.2.3:3201")), &plain, "/ready"),
            "http://10.1.2.3:3201/ready"
        );
    }

    #[test]
    fn a_node_whose_http_api_speaks_tls_is_called_over_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert =
            rcgen::generate_simple_self_signed(vec!["ringtail.example".to_owned()]).expect("cert");
        let (pem, key) = (dir.path().join("http.pem"), dir.path().join("http.key"));
        std::fs::write(&pem, cert.cert.pem()).expect("cert");
        std::fs::write(&key, cert.signing_key.serialize_pem()).expect("key");
        let raw = RawConfig {
            http_tls_cert_file: Some(pem.clone()),
            http_tls_key_file: Some(key),
            http_tls_ca_file: Some(pem),
            ..flags(None)
        };
        let tls = peer_http(Some(&raw), 1000).expect("client");
        assert_eq!(
            local_admin_url(&raw, &tls, "/ready"),
            "https://127.0.0.1:3200/ready"
        );
        // A CA file that is not there is an error of the config, as for the node itself.
        let broken = RawConfig {
            http_tls_ca_file: Some(dir.path().join("missing.pem")),
            ..raw
        };
        assert_eq!(
            peer_http(Some(&broken), 1000).err(),
            Some(ExitCode::FAILURE)
        );
    }

    /// Serves `/ready` answering `status` on a port of its own; returns the base URL.
    async fn node_answering(status: u16) -> String {
        let app = axum::Router::new().route(
            "/ready",
            axum::routing::get(move || async move {
                axum::http::StatusCode::from_u16(status).expect("status")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn check(url: String) -> ExitCode {
        let args = HealthcheckArgs {
            url: Some(url),
            timeout_ms: 2000,
        };
        healthcheck(args, None, &RawConfig::default()).await
    }

    #[tokio::test]
    async fn healthcheck_exits_0_only_when_ready_answers_200() {
        let ready = node_answering(200).await;
        assert_eq!(check(format!("{ready}/ready")).await, ExitCode::SUCCESS);
        let replaying = node_answering(503).await;
        assert_eq!(check(format!("{replaying}/ready")).await, ExitCode::FAILURE);
        // Nothing listens on the port any more: a connection error is unhealthy too.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        assert_eq!(
            check(format!("http://127.0.0.1:{port}/ready")).await,
            ExitCode::FAILURE
        );
    }
}
