//! `nodeway check`: validate manifests and print what would be served.

use control::{Change, ViewCompiler};
use model::{CompileOptions, ConfigError, Listen, Service, ServiceType, Snapshot, TargetPort};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exits 1 on errors (and, `strict`, on warnings), else 0.
pub fn check(paths: &[PathBuf], opts: CompileOptions, domain: &str, strict: bool) -> ExitCode {
    let snap = match control::load_paths(paths, opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nodeway check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let domain = domain.trim_end_matches('.');
    let errors = match all_errors(&snap, domain) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("nodeway check: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render(&snap, &errors, domain));
    let failed_on_warnings = strict && !snap.warnings.is_empty();
    if errors.is_empty() && !failed_on_warnings {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The model's errors and each plane's, from the same view compiles the
/// running planes do (a bad `nodeway.io/udp-idle-timeout` shows here).
pub fn all_errors(snap: &Snapshot, domain: &str) -> anyhow::Result<Vec<ConfigError>> {
    fn run<C: ViewCompiler>(mut c: C, snap: &Snapshot) -> Vec<ConfigError> {
        c.compile(
            None,
            Change {
                old: None,
                new: snap,
            },
        )
        .errors
    }
    let mut errors = snap.errors.to_vec();
    errors.extend(proxy::check(snap, &proxy::Config::default()));
    let dns = dns::server::TableCompiler {
        opts: dns::table::TableOptions {
            zone: domain.to_string(),
            ttl: dns::Config::default().ttl,
            pod_records: true,
        },
        metrics: None,
    };
    errors.extend(run(dns, snap));
    errors.extend(run(ingress::ViewCompiler::new(None)?, snap));
    Ok(errors)
}

/// The whole report as text (tested directly).
pub fn render(snap: &Snapshot, errors: &[ConfigError], domain: &str) -> String {
    let mut out = String::new();
    let mut rows = vec![[
        "SERVICE".to_string(),
        "TYPE".into(),
        "CLUSTER-IP".into(),
        "PORTS".into(),
        "NODE-PORTS".into(),
        "ENDPOINTS (ready/total)".into(),
    ]];
    for s in snap.services_sorted() {
        rows.push([
            s.id.to_string(),
            service_type(s),
            cluster_ip(s),
            s.ports.iter().map(port).collect::<Vec<_>>().join(","),
            node_ports(s),
            endpoints(s),
        ]);
    }
    let _ = writeln!(out, "Services ({}):", snap.services.len());
    table(&mut out, &rows);

    let listens: Vec<String> = snap
        .frontends_sorted()
        .into_iter()
        .map(|f| match f.listen {
            Listen::Addr(a) => format!("{a}/{} -> {}", f.protocol.as_str(), f.service.id),
            Listen::NodePort(p) => {
                format!("<node-ip>:{p}/{} -> {}", f.protocol.as_str(), f.service.id)
            }
        })
        .chain(snap.health_checks.iter().map(|h| {
            let what = if h.service.allocated.health_check_node_port {
                "load-balancer health check, allocated"
            } else {
                "load-balancer health check"
            };
            format!("<node-ip>:{}/TCP -> {} ({what})", h.port, h.service.id)
        }))
        .collect();
    let _ = writeln!(out, "\nL4 frontends ({}):", listens.len());
    for l in listens {
        let _ = writeln!(out, "  {l}");
    }

    let mut routes = vec![[
        "HOST".to_string(),
        "PATH".into(),
        "TYPE".into(),
        "BACKEND".into(),
        "INGRESS".into(),
    ]];
    for r in snap.ingress.routes() {
        let backend = match &r.backend {
            // `namespace/name:port`
            Some(b) => b.key.to_string(),
            None => "(none: 503)".into(),
        };
        let host = if r.host.is_empty() {
            "*".to_string()
        } else {
            r.host.to_string()
        };
        routes.push([
            host,
            r.path.to_string(),
            format!("{:?}", r.kind),
            backend,
            r.ingress.to_string(),
        ]);
    }
    let _ = writeln!(out, "\nIngress routes ({}):", routes.len() - 1);
    table(&mut out, &routes);

    gateway_api(&mut out, snap);

    let names = dns_names(snap, domain);
    let _ = writeln!(out, "\nDNS names ({}):", names.len());
    for (name, answer) in names {
        let _ = writeln!(out, "  {name:<55} {answer}");
    }

    if !snap.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings ({}):", snap.warnings.len());
        for w in snap.warnings.iter() {
            let _ = writeln!(out, "  {w}");
        }
    }
    let _ = writeln!(out, "\nErrors ({}):", errors.len());
    for e in errors {
        let _ = writeln!(out, "  {e}");
    }
    out
}

/// The Gateway API objects' conditions and the rules per served port;
/// nothing when there are none.
fn gateway_api(out: &mut String, snap: &Snapshot) {
    let status = snap.gateway.status().lines();
    if status.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nGateway API status:");
    for line in status {
        let _ = writeln!(out, "  {line}");
    }
    let mut rows = vec![[
        "LISTEN".to_string(),
        "LISTENER".into(),
        "HOST".into(),
        "MATCH".into(),
        "ACTION".into(),
        "HTTPROUTE".into(),
    ]];
    for (at, port) in snap.gateway.ports() {
        let listen = match at {
            Listen::Addr(a) => a.to_string(),
            Listen::NodePort(p) => format!("<node-ip>:{p}"),
        };
        for l in port.listeners() {
            // By hostname; within one, in the order requests try the rules.
            let mut rules: Vec<_> = l.rules().collect();
            rules.sort_by_key(|(host, _)| *host);
            for (host, entry) in rules {
                rows.push([
                    listen.clone(),
                    format!("{}/{}", l.gateway, l.name),
                    if host.is_empty() {
                        "*".into()
                    } else {
                        host.to_string()
                    },
                    entry.matcher.to_string(),
                    entry.rule.action.to_string(),
                    format!("{} rule {}", entry.rule.route, entry.rule.index),
                ]);
            }
        }
    }
    let _ = writeln!(out, "\nGateway API routes ({}):", rows.len() - 1);
    table(out, &rows);
}

fn service_type(s: &Service) -> String {
    if s.headless {
        format!("{} (headless)", s.service_type.as_str())
    } else {
        s.service_type.as_str().to_string()
    }
}

fn cluster_ip(s: &Service) -> String {
    match (&s.external_name, s.headless) {
        (Some(n), _) => format!("-> {n}"),
        (None, true) => "None".into(),
        _ if s.cluster_ips.is_empty() => "-".into(),
        _ => {
            let ips: Vec<String> = s.cluster_ips.iter().map(ToString::to_string).collect();
            allocated(ips.join(","), s.allocated.cluster_ips)
        }
    }
}

/// Marks a value nodeway filled in as the API server would have.
fn allocated(value: String, was: bool) -> String {
    if was {
        format!("{value} (allocated)")
    } else {
        value
    }
}

fn port(p: &model::ServicePort) -> String {
    let target = match &p.target_port {
        TargetPort::Number(n) => n.to_string(),
        TargetPort::Name(n) => n.clone(),
    };
    let name = if p.name.is_empty() {
        String::new()
    } else {
        format!("{}:", p.name)
    };
    format!("{name}{}/{}->{target}", p.port, p.protocol.as_str())
}

fn node_ports(s: &Service) -> String {
    let v: Vec<String> = s
        .ports
        .iter()
        .filter_map(|p| {
            let n = p.node_port?;
            Some(allocated(
                n.to_string(),
                s.allocated.node_ports.contains(&p.port),
            ))
        })
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn endpoints(s: &Service) -> String {
    if s.service_type == ServiceType::ExternalName {
        return "-".into();
    }
    let ready = s.endpoints.iter().filter(|e| e.ready).count();
    format!("{ready}/{}", s.endpoints.len())
}

/// The names cluster DNS answers for these Services (per the DNS spec).
fn dns_names(snap: &Snapshot, domain: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in snap.services_sorted() {
        let base = format!("{}.{}.svc.{domain}", s.name, s.namespace);
        if let Some(target) = &s.external_name {
            out.push((base, format!("CNAME {target}")));
            continue;
        }
        let ips: Vec<String> = if s.headless {
            s.dns_endpoints().map(|e| e.ip.to_string()).collect()
        } else {
            s.cluster_ips.iter().map(ToString::to_string).collect()
        };
        // As the DNS plane answers: a headless name without ready
        // endpoints does not exist; a Service without an address does.
        let answer = match (ips.is_empty(), s.headless) {
            (true, true) => "NXDOMAIN (no ready endpoints)".into(),
            (true, false) => "NODATA (no clusterIP)".into(),
            (false, _) => ips.join(","),
        };
        out.push((base.clone(), answer));
        if s.headless {
            for e in s.dns_endpoints() {
                if let Some(h) = &e.hostname {
                    out.push((format!("{h}.{base}"), e.ip.to_string()));
                }
            }
        }
        for p in s.ports.iter().filter(|p| !p.name.is_empty()) {
            out.push((
                format!(
                    "_{}._{}.{base}",
                    p.name,
                    p.protocol.as_str().to_ascii_lowercase()
                ),
                format!("SRV {}", p.port),
            ));
        }
    }
    out
}

fn table<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in rows {
        let mut line = String::from(" ");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(line, " {c:<w$}", w = widths[i]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
