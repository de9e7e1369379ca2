//! The forwarder through real sockets on 127.0.0.1: concurrent identical questions cost one upstream
//! query, answers are cached case-insensitively and echo the asker's case, and a dead upstream gives
//! SERVFAIL rather than silence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use svcnet_dns::{DnsConfig, DnsServer, Metrics};
use tokio::net::UdpSocket;

/// An upstream that answers every question with 192.0.2.1 after `delay`, counting questions.
async fn slow_stub(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, peer)) = sock.recv_from(&mut buf).await {
            n.fetch_add(1, Ordering::SeqCst);
            let Ok(req) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let sock = sock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut m = Message::response(req.metadata.id, OpCode::Query);
                m.metadata.recursion_available = true;
                m.add_queries(req.queries.iter().cloned());
                let name = req.queries[0].name().clone();
                m.add_answer(Record::from_rdata(name, 30, RData::A(A::new(192, 0, 2, 1))));
                let _ = sock.send_to(&m.to_vec().unwrap(), peer).await;
            });
        }
    });
    (addr, count)
}

async fn ask(server: SocketAddr, name: &str) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    // from_ascii keeps the spelling (from_str lowers it).
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(8), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

async fn server(upstreams: Vec<SocketAddr>) -> SocketAddr {
    let cfg = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams,
        ..DnsConfig::default()
    };
    let s = DnsServer::bind(cfg, Metrics::default()).await.unwrap();
    let addr = s.local_addrs()[0];
    let (mut w, _tasks) = s.start().unwrap();
    w.mark_synced();
    w.publish();
    // The writer must outlive the test's queries; leaking it is fine in a test process.
    std::mem::forget(w);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_questions_coalesce_and_answers_are_cached() {
    let (up, count) = slow_stub(Duration::from_millis(300)).await;
    let dns = server(vec![up]).await;
    let answers = futures::future::join_all((0..20).map(|_| ask(dns, "coalesce.example."))).await;
    for m in &answers {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one upstream query for 20 askers"
    );
    // Cached, whatever the case; the answer carries the asker's spelling.
    let m = ask(dns, "COALESCE.Example.").await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(m.answers[0].name.to_string(), "COALESCE.Example.");
    assert_eq!(m.queries[0].name().to_string(), "COALESCE.Example.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gives_servfail() {
    // A port nobody listens on (bound, then released).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dns = server(vec![dead]).await;
    let m = ask(dns, "nowhere.example.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}
