//! Request edge cases answered as kube-apiserver answers them: label selector corner cases and very
//! long selectors (an HTTP answer over HTTP/1.1 and HTTP/2, never a dropped connection), the
//! `Authorization` header's scheme in any case. (The streaming subresources are `tests/exec.rs`'.)

use std::time::Duration;

use svcnet_testsupport::Cluster;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn token(c: &Cluster) -> String {
    std::fs::read_to_string(c.dir.join("pki/token"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn selectors_and_authorization_headers() {
    let c = Cluster::start(SVCNET);
    let auth = format!("Authorization: Bearer {}", token(&c));

    // `()` is the empty value to apimachinery's parser, so `a notin ()` is a valid selector there.
    let out = c.ok(&["get", "services", "-l", "a notin ()", "-o", "name"]);
    assert!(out.contains("service/kubernetes"), "{out}");
    let err = c.fail_v("1.33", &["get", "services", "-l", "a in (x"], None);
    assert!(
        err.contains("unable to parse requirement") || err.contains("found ''"),
        "{err}"
    );

    // A 40 KB selector is answered, through kubectl (HTTP/2; escaped, its URL is near 55 KB) and
    // curl over HTTP/1.1 and HTTP/2.
    let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>().join(",");
    let long = format!("app in ({})", values(7_000));
    assert!(long.len() > 40_000);
    let out = c.ok(&["get", "services", "-l", &long, "-o", "name"]);
    assert_eq!(out.trim(), "", "nothing carries app=v…");
    let query = |sel: &str| format!("/api/v1/services?labelSelector={}", sel.replace(' ', "%20"));
    for http in ["--http1.1", "--http2"] {
        let (code, body) = c.curl(&[http, "-H", &auth], &query(&long));
        assert_eq!(code, 200, "{http}: {body}");
        assert!(body.contains("\"kind\":\"ServiceList\""), "{http}: {body}");
    }
    // Past what the `http` crate can hold in a URI (64 KiB), a 100 KB selector is refused with an
    // HTTP status, at once: 414 over HTTP/1.1; over HTTP/2 the header list is past the limit the
    // server advertises, which the client honours or the server answers with 431. Never a dropped
    // connection that kubectl retries until its timeout.
    let longer = format!("app in ({})", values(16_000));
    assert!(longer.len() > 100_000);
    let started = std::time::Instant::now();
    let err = c.fail_v(
        "1.33",
        &["get", "services", "-l", &longer, "--request-timeout=30s"],
        None,
    );
    assert!(
        err.contains("status code 431") || err.contains("larger than peer's advertised limit"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let (code, _) = c.curl(&["--http1.1", "-H", &auth], &query(&longer));
    assert_eq!(code, 414);

    // The scheme is case-insensitive, as kube-apiserver's bearer authenticator has it.
    let t = token(&c);
    for (header, want) in [
        (format!("Authorization: bearer {t}"), 200),
        (format!("Authorization: BEARER {t}"), 200),
        (format!("Authorization: Bearer  {t}"), 401),
        (format!("Authorization: Basic {t}"), 401),
    ] {
        let (code, body) = c.curl(&["-H", &header], "/api/v1/namespaces/default");
        assert_eq!(code, want, "{header}: {body}");
    }
}
