//! `nodeway demo`: the embedded configs/demo, echo backends for its endpoints,
//! every plane, and a guide of commands to paste.

use crate::{ServeArgs, echo, run};
use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// configs/demo, embedded so the demo works from any folder.
pub const FILES: &[(&str, &str)] = &[
    (
        "00-namespaces.yaml",
        include_str!("../configs/demo/00-namespaces.yaml"),
    ),
    ("10-web.yaml", include_str!("../configs/demo/10-web.yaml")),
    ("20-shop.yaml", include_str!("../configs/demo/20-shop.yaml")),
    (
        "30-ingress.yaml",
        include_str!("../configs/demo/30-ingress.yaml"),
    ),
    ("40-tls.yaml", include_str!("../configs/demo/40-tls.yaml")),
    (
        "50-gateway.yaml",
        include_str!("../configs/demo/50-gateway.yaml"),
    ),
];

pub async fn demo(args: ServeArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("nodeway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let snap = control::load_paths(
        std::slice::from_ref(&dir),
        args.model.compile_options(&args.ingress)?,
    )?;
    anyhow::ensure!(
        snap.errors.is_empty(),
        "demo manifests have errors: {:?}",
        snap.errors
    );

    // One echo backend per endpoint address, named after its Pod.
    let mut backends: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for s in snap.services_sorted() {
        for p in &s.ports {
            for b in p.backends.iter() {
                let name = b
                    .pod()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}-{}", s.name, b.ip));
                backends.entry(b.addr()).or_insert(name);
            }
        }
    }
    let mut tasks = Vec::new();
    for (addr, name) in &backends {
        tasks.push(
            echo::start(*addr, name)
                .await
                .with_context(|| format!("echo backend {name} on {addr}"))?,
        );
    }
    println!(
        "nodeway demo: manifests in {}; {} echo backends started",
        dir.display(),
        tasks.len()
    );
    let guide = guide(&args);
    let result = run::run(
        run::Source::Folders(vec![dir.clone()]),
        args,
        Some(Box::new(move |_snap| println!("{guide}"))),
    )
    .await;
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn guide(args: &ServeArgs) -> String {
    let node = args
        .node_ips
        .first()
        .map(ToString::to_string)
        .unwrap_or_else(|| "127.0.0.1".into());
    let dns = crate::wire_dns::listen_addr(&args.dns);
    let dig = format!("dig +short -p {} @{}", dns.port(), dns.ip());
    let http = crate::wire_ingress::http_addr(&args.ingress);
    let https = crate::wire_ingress::https_addr(&args.ingress);
    let tls = format!(
        "curl -sk --resolve shop.demo.test:{port}:{ip} https://shop.demo.test:{port}",
        ip = https.ip(),
        port = https.port()
    );
    let admin = args.admin_listen;
    let d = &args.cluster_domain;
    let lines = [
        "".to_string(),
        "nodeway demo is ready. Try:".into(),
        "".into(),
        "  # L4: ClusterIP round-robin over the two ready Pods (web-a, web-b; web-c is not ready)".into(),
        "  for i in 1 2 3 4; do curl -s http://127.0.100.10:8000/hostname; echo; done".into(),
        "  # L4: the same Pods through a NodePort on the node address".into(),
        format!("  curl -s http://{node}:30080/hostname; echo"),
        "  # L4 UDP: shop/api's UDP port answers `hostname` with the endpoint's name".into(),
        "  echo -n hostname | nc -u -w1 127.0.100.20 9000; echo".into(),
        "".into(),
        "  # DNS: a ClusterIP; the two headless addresses; db-0's address; a CNAME; SRV for a named port".into(),
        format!("  {dig} web.demo.svc.{d}"),
        format!("  {dig} db.shop.svc.{d}"),
        format!("  {dig} db-0.db.shop.svc.{d}"),
        format!("  {dig} search.demo.svc.{d} CNAME"),
        format!("  {dig} _http._tcp.api.shop.svc.{d} SRV"),
        "".into(),
        "  # L7: host and path routing; the JSON's \"name\" is the endpoint that answered".into(),
        format!("  curl -s -H 'Host: api.demo.test' 'http://{http}/v1/orders?x=1'   # api-1/api-2, path rewritten to /orders?x=1"),
        format!("  curl -s -H 'Host: api.demo.test' http://{http}/anything          # api-1/api-2, path /anything"),
        format!("  curl -si -H 'Host: shop.demo.test' http://{http}/cart | head -3  # 308 to https: the host has TLS"),
        "  # Gateway API: an HTTPRoute on the Gateway's listener (every --node-ip, port 8090), 3:1 frontend:api".into(),
        format!("  curl -s -H 'Host: gw.demo.test' http://{node}:8090/shop   # frontend-1 or api-1/api-2, with X-Via: gateway-api"),
        "  # L7 over TLS with the demo certificate (self-signed, hence -k)".into(),
        format!("  {tls}/cart       # frontend-1 (Prefix /)"),
        format!("  {tls}/healthz    # api-1/api-2 (Exact /healthz)"),
        "".into(),
        "  # Admin".into(),
        format!("  curl -s http://{admin}/readyz; curl -s http://{admin}/metrics | grep nodeway_config"),
        "".into(),
        "Edit the files in the folder above and watch nodeway reload them. Ctrl-C stops.".into(),
    ];
    lines.join("\n")
}
