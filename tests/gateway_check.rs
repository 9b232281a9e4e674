//! `nodeway check` on the Gateway API example (configs/gateway): the
//! conditions the spec requires of each object, and the compiled rules.

mod support;

use std::process::Command;

#[test]
fn check_reports_gateway_api_status_and_rules() {
    let out = Command::new(support::bin())
        .args(["check", "--config", "configs/gateway"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "GatewayClass nodeway: Accepted=True (Accepted)",
        "Gateway infra/edge: Accepted=True (ListenersNotValid: some listeners are not valid), Programmed=True (Programmed)",
        "listener http: 12 attached route(s); Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs), Conflicted=False (NoConflicts), Programmed=True (Programmed)",
        "listener tenants: 1 attached route(s); Accepted=True (Accepted)",
        "listener metrics: 0 attached route(s); Accepted=False (UnsupportedProtocol",
        "HTTPRoute blog/posts -> Gateway infra/edge section http: Accepted=False (NotAllowedByListeners",
        "HTTPRoute shop/cross -> Gateway infra/edge section http: Accepted=True (Accepted), ResolvedRefs=False (RefNotPermitted",
        "HTTPRoute shop/broken -> Gateway infra/edge section http: Accepted=True (Accepted), ResolvedRefs=False (BackendNotFound",
        "HTTPRoute shop/wrong-host -> Gateway infra/edge section tenants: Accepted=False (NoMatchingListenerHostname",
        "HTTPRoute shop/matching -> Gateway infra/edge section http: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)",
        "Gateway API routes (29):",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Rules of one host in the order requests try them: Exact first, then
    // the longer prefix.
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("shop/order rule"))
        .collect();
    let rules: Vec<&str> = order
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(rules, ["1", "0", "3", "2"], "{text}");
    assert!(
        text.contains(
            "-> shop/v1:8080 (weight 70), shop/v2:8080 (weight 30), shop/v3:8080 (weight 0)"
        ),
        "{text}"
    );
}
