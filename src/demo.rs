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
];

pub async fn demo(args: ServeArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("nodeway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let snap = control::load_paths(
        std::slice::from_ref(&dir),
        args.model.compile_options(&args.ingress),
    )?;
    anyhow::ensure!(
        snap.errors.is_empty(),
        "demo manifests have errors: {:?}",
        snap.errors
    );

    // One echo backend per endpoint address, named after its Pod.
    let mut backends: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for s in snap.services.values() {
        for p in &s.ports {
            for b in p.backends.iter() {
                let name = b
                    .pod
                    .as_deref()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}-{}", s.name, b.addr.ip()));
                backends.entry(b.addr).or_insert(name);
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
        vec![dir.clone()],
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
    let http = crate::wire_ingress::http_addr(&args.ingress);
    let https = crate::wire_ingress::https_addr(&args.ingress);
    let admin = args.admin_listen;
    let d = &args.cluster_domain;
    format!(
        "\nnodeway demo is ready. Try:\n\
\n  # L4: ClusterIP round-robin over the two ready Pods (web-a, web-b; web-c is not ready)\n\
  for i in 1 2 3 4; do curl -s http://127.0.100.10:8000/hostname; echo; done\n\
  # L4: the same Pods through a NodePort on the node address\n\
  curl -s http://{node}:30080/hostname; echo\n\
  # L4 UDP: shop/api's UDP port answers `hostname` with the endpoint's name\n\
  echo -n hostname | nc -u -w1 127.0.100.20 9000; echo\n\
\n  # DNS (answers: 127.0.100.10; two headless addresses; db-0's address; a CNAME; SRV for the named port)\n\
  dig +short -p {dns_port} @{dns_ip} web.demo.svc.{d}\n\
  dig +short -p {dns_port} @{dns_ip} db.shop.svc.{d}\n\
  dig +short -p {dns_port} @{dns_ip} db-0.db.shop.svc.{d}\n\
  dig +short -p {dns_port} @{dns_ip} search.demo.svc.{d} CNAME\n\
  dig +short -p {dns_port} @{dns_ip} _http._tcp.api.shop.svc.{d} SRV\n\
\n  # L7: host and path routing (JSON names the endpoint that answered)\n\
  curl -s -H 'Host: shop.demo.test' http://{http}/cart         # frontend-1\n\
  curl -s -H 'Host: shop.demo.test' http://{http}/healthz      # api-1 or api-2 (Exact)\n\
  curl -s -H 'Host: api.demo.test'  http://{http}/v1/orders?x=1 # rewritten: path /orders?x=1\n\
  # L7 TLS with the demo certificate (self-signed, hence -k)\n\
  curl -sk --resolve shop.demo.test:{https_port}:{https_ip} https://shop.demo.test:{https_port}/cart\n\
\n  # Admin\n\
  curl -s http://{admin}/readyz; curl -s http://{admin}/metrics | grep nodeway_config\n\
\nEdit the files in the folder above and watch nodeway reload them. Ctrl-C stops.\n",
        dns_ip = dns.ip(),
        dns_port = dns.port(),
        https_ip = https.ip(),
        https_port = https.port(),
    )
}
