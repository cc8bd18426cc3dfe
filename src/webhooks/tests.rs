//! Deliveries to a real HTTP receiver on 127.0.0.1: the request the extension makes, retries,
//! timeouts, concurrency, giving up and a full queue. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::*;
use crate::values::SecretUrl;

/// One request as the receiver read it off the socket.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    Status(u16),
    /// Say nothing for this long, then close.
    Silence(Duration),
}

type Answer = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// A minimal HTTP/1.1 receiver: one thread per connection, one request per connection
/// (`Connection: close`), so a silent answer never holds up another request.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(answer: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (answer, log) = (Arc::clone(&answer), Arc::clone(&log));
                std::thread::spawn(move || serve(stream, &*answer, &log));
            }
        });
        Receiver { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Request> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, answer: &Answer, log: &Mutex<Vec<Request>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    match answer(index, &request) {
        Reply::Status(code) => {
            let body = "ok";
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::Silence(time) => std::thread::sleep(time),
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&buf[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// The defaults with test-sized timings, pointed at `url`.
fn settings(url: &str) -> WebhookSettings {
    let mut s = crate::config::Settings::load_from(None, Vec::new())
        .unwrap()
        .webhooks;
    s.url = Some(url.parse::<SecretUrl>().unwrap());
    s.secret = Some("s3cret".parse().unwrap());
    s.events = WebhookEvent::ALL.to_vec();
    s.timeout = Duration::from_secs(1);
    s.retry_initial = Duration::from_millis(20);
    s.retry_max = Duration::from_millis(50);
    s.validate().unwrap();
    s
}

fn count(vec: &prometheus::IntCounterVec, event: WebhookEvent) -> u64 {
    vec.with_label_values(&[event.as_str()]).get()
}

/// Polls `done` until it holds; fails the test after `limit`.
async fn until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn a_delivery_is_the_request_the_extension_sends() {
    let receiver = Receiver::start(|_, _| Reply::Status(204));
    let metrics = Metrics::new();
    let mut s = settings(&receiver.url());
    s.events = vec![WebhookEvent::Change];
    let hooks = Webhooks::start(&s, Arc::clone(&metrics)).unwrap();
    assert!(hooks.wants(WebhookEvent::Change) && !hooks.wants(WebhookEvent::Connect));
    assert_eq!(
        hooks.debounce(),
        (Duration::from_secs(2), Duration::from_secs(10))
    );
    // Not configured: never queued, so never sent.
    hooks.send(WebhookEvent::Connect, json!({"documentName": "ignored"}));
    let payload = json!({"documentName": "team/doc-1", "document": {"default": {"type": "doc"}}});
    hooks.send(WebhookEvent::Change, payload.clone());
    until("delivered", Duration::from_secs(5), || {
        count(&metrics.webhooks_sent_total, WebhookEvent::Change) == 1
    })
    .await;

    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hook")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    // The signature verifies with an HMAC of the raw bytes received.
    let header = request.header(SIGNATURE_HEADER).unwrap();
    let hex = header.strip_prefix("sha256=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&request.body);
    mac.verify_slice(&hex_decode(hex)).unwrap();
    // `{event, payload}`, event first.
    assert!(request.body.starts_with(br#"{"event":"change","payload":"#));
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, json!({"event": "change", "payload": payload}));
    for event in WebhookEvent::ALL {
        assert_eq!(count(&metrics.webhook_attempts_failed_total, event), 0);
    }
    assert_eq!(
        count(&metrics.webhooks_sent_total, WebhookEvent::Connect),
        0
    );
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_delivery_on_the_third_attempt() {
    let receiver = Receiver::start(|i, _| Reply::Status(if i < 2 { 500 } else { 200 }));
    let metrics = Metrics::new();
    let hooks = Webhooks::start(&settings(&receiver.url()), Arc::clone(&metrics)).unwrap();
    hooks.send(WebhookEvent::Disconnect, json!({"documentName": "d"}));
    until(
        "delivered after two failures",
        Duration::from_secs(5),
        || count(&metrics.webhooks_sent_total, WebhookEvent::Disconnect) == 1,
    )
    .await;
    let event = WebhookEvent::Disconnect;
    assert_eq!(count(&metrics.webhook_attempts_failed_total, event), 2);
    assert_eq!(count(&metrics.webhook_retries_total, event), 2);
    assert_eq!(count(&metrics.webhooks_given_up_total, event), 0);
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    // Every attempt resends the same bytes under the same signature.
    for request in &received[1..] {
        assert_eq!(request.body, received[0].body);
        assert_eq!(
            request.header(SIGNATURE_HEADER),
            received[0].header(SIGNATURE_HEADER)
        );
    }
}

#[tokio::test]
async fn a_silent_receiver_holds_up_no_other_delivery_and_is_given_up() {
    // Silent on the "slow" document for longer than the timeout, prompt on the others.
    let receiver = Receiver::start(|_, request| {
        if String::from_utf8_lossy(&request.body).contains("slow") {
            Reply::Silence(Duration::from_secs(3))
        } else {
            Reply::Status(200)
        }
    });
    let metrics = Metrics::new();
    let mut s = settings(&receiver.url());
    s.max_attempts = 2;
    let hooks = Webhooks::start(&s, Arc::clone(&metrics)).unwrap();
    let event = WebhookEvent::Change;
    hooks.send(event, json!({"documentName": "slow"}));
    until(
        "the slow request reached the receiver",
        Duration::from_secs(5),
        || !receiver.received().is_empty(),
    )
    .await;
    hooks.send(event, json!({"documentName": "fast"}));
    until("the second delivery", Duration::from_secs(5), || {
        count(&metrics.webhooks_sent_total, event) == 1
    })
    .await;
    // Delivered while the slow one's first attempt was still waiting for its answer.
    assert_eq!(count(&metrics.webhook_attempts_failed_total, event), 0);

    // Two attempts of 1 s each (plus a 20 ms backoff), then given up.
    until("given up", Duration::from_secs(10), || {
        count(&metrics.webhooks_given_up_total, event) == 1
    })
    .await;
    assert_eq!(count(&metrics.webhook_attempts_failed_total, event), 2);
    assert_eq!(count(&metrics.webhook_retries_total, event), 1);
    assert_eq!(count(&metrics.webhooks_sent_total, event), 1);
    let slow = receiver
        .received()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("slow"))
        .count();
    assert_eq!(slow, 2, "one request per attempt");
}

#[tokio::test]
async fn a_full_queue_drops_new_deliveries_without_blocking() {
    let receiver = Receiver::start(|_, _| Reply::Silence(Duration::from_secs(3)));
    let metrics = Metrics::new();
    let mut s = settings(&receiver.url());
    s.max_queued = 2;
    let hooks = Webhooks::start(&s, Arc::clone(&metrics)).unwrap();
    let started = Instant::now();
    for n in 0..5 {
        hooks.send(WebhookEvent::Create, json!({"documentName": n}));
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "send waited"
    );
    // Places are taken synchronously by `send`: the count is exact at once.
    assert_eq!(metrics.webhooks_dropped_total.get(), 3);
}

#[tokio::test]
async fn no_url_no_webhooks() {
    let mut s = settings("http://127.0.0.1:9/");
    s.url = None;
    assert!(Webhooks::start(&s, Metrics::new()).is_none());
}

#[test]
fn starting_outside_a_runtime_is_refused_not_a_panic() {
    let s = settings("http://127.0.0.1:9/");
    assert!(Webhooks::start(&s, Metrics::new()).is_none());
}

#[test]
fn handles_are_cheap_to_share_across_threads() {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    shared::<Webhooks>();
}

#[test]
fn every_event_series_exists_at_start_and_is_documented() {
    let text = Metrics::new().render();
    let catalogue = include_str!("../../docs/metrics.md");
    for metric in [
        "zedi_webhooks_sent_total",
        "zedi_webhook_attempts_failed_total",
        "zedi_webhook_retries_total",
        "zedi_webhooks_given_up_total",
    ] {
        let row = catalogue
            .lines()
            .find(|line| line.starts_with(&format!("| `{metric}`")))
            .unwrap_or_else(|| panic!("{metric} is not in docs/metrics.md"));
        for event in WebhookEvent::ALL {
            assert!(
                row.contains(event.as_str()),
                "{metric}: {event} not documented"
            );
            let series = format!("{metric}{{event=\"{event}\"}} 0");
            assert!(text.contains(&series), "{series} not registered at start");
        }
    }
    assert!(text.contains("zedi_webhooks_dropped_total 0"));
    assert!(catalogue.contains("| `zedi_webhooks_dropped_total`"));
}

#[tokio::test]
async fn a_refused_connection_is_a_failed_attempt() {
    // A port nobody listens on any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = Metrics::new();
    let mut s = settings(&format!("http://{addr}/hook"));
    s.max_attempts = 1;
    let hooks = Webhooks::start(&s, Arc::clone(&metrics)).unwrap();
    hooks.send(WebhookEvent::Connect, json!({}));
    until("given up", Duration::from_secs(5), || {
        count(&metrics.webhooks_given_up_total, WebhookEvent::Connect) == 1
    })
    .await;
    assert_eq!(
        count(
            &metrics.webhook_attempts_failed_total,
            WebhookEvent::Connect
        ),
        1
    );
    assert_eq!(
        count(&metrics.webhook_retries_total, WebhookEvent::Connect),
        0
    );
}
