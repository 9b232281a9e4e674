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
        "listener http: 2 attached route(s); Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs), Conflicted=False (NoConflicts), Programmed=True (Programmed)",
        "listener metrics: 0 attached route(s); Accepted=False (UnsupportedProtocol",
        "HTTPRoute blog/posts -> Gateway infra/edge: Accepted=False (NotAllowedByListeners",
        "HTTPRoute shop/payments -> Gateway infra/edge: Accepted=True (Accepted), ResolvedRefs=False (RefNotPermitted",
        "HTTPRoute shop/store -> Gateway infra/edge section http: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)",
        "Gateway API routes (4):",
        "serving their listeners is not implemented yet",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Rules of one host in the order requests try them: the longer prefix,
    // then the header match, then the catch-all.
    let store: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("shop/store rule"))
        .collect();
    let rules: Vec<&str> = store
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(rules, ["0", "1", "2"], "{text}");
    assert!(
        store[0].contains("shop/cart:80 (weight 90), shop/cart-canary:80 (weight 10)"),
        "{text}"
    );
}
