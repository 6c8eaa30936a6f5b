//! Who may read the dashboard: a non-loopback address refuses to start without a
//! token; with a token, every route answers 401 unless the request carries it, and the
//! token reaches the browser only as an HttpOnly cookie, never in the page or script.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use sessionbus_dashboard::{Dashboard, DashboardConfig, DashboardErrorKind};
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::NatsServer;

fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_and_reaches_the_browser_only_as_an_http_only_cookie() {
    let server = NatsServer::start().expect("nats-server");
    let bus = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());

    for addr in ["0.0.0.0:0", "[::]:0"] {
        let refused = Dashboard::bind(DashboardConfig::new(addr.parse().unwrap()), bus.clone()).await;
        let err = refused.err().expect("a non-loopback address without a token is refused");
        assert_eq!(err.kind(), DashboardErrorKind::TokenRequired);
        assert!(err.to_string().contains("--token"), "the error says what to do: {err}");
    }
    let blank = DashboardConfig::new("0.0.0.0:0".parse().unwrap()).with_token(Some("  ".into()));
    assert!(Dashboard::bind(blank, bus.clone()).await.is_err(), "a blank token is no token");

    const TOKEN: &str = "s3cr3t-token-value";
    let config = DashboardConfig::new("127.0.0.1:0".parse().unwrap()).with_token(Some(TOKEN.into()));
    let dashboard = Dashboard::bind(config, bus).await.expect("bind");
    let addr = dashboard.local_addr().expect("addr");
    assert_eq!(dashboard.url().expect("url"), format!("http://{addr}/?token={TOKEN}"));
    tokio::spawn(dashboard.serve(std::future::pending()));

    for path in
        ["/", "/app.js", "/style.css", "/api/config", "/api/sessions", "/api/workers", "/api/events", "/api/sessions/x"]
    {
        assert_eq!(get(addr, path, "").0, 401, "{path} without the token");
        assert_eq!(get(addr, path, "Authorization: Bearer wrong\r\n").0, 401, "{path} with another token");
        assert_eq!(get(addr, &format!("{path}?token=wrong"), "").0, 401, "{path} with another token");
    }
    let (status, page) = get(addr, &format!("/?token={TOKEN}"), "");
    assert_eq!(status, 200);
    let cookie = page.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let body = page.split_once("\r\n\r\n").expect("body").1;
    assert!(!body.contains(TOKEN), "the page never holds the token");
    let (status, script) = get(addr, "/app.js", &format!("Cookie: sessionbus_token={TOKEN}\r\n"));
    assert_eq!(status, 200);
    assert!(!script.split_once("\r\n\r\n").expect("body").1.contains(TOKEN));
    assert!(script.to_ascii_lowercase().contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert_eq!(get(addr, "/api/config", &format!("Authorization: Bearer {TOKEN}\r\n")).0, 200);
}
