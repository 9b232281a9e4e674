//! nodeway: kube-proxy, cluster DNS and an Ingress controller in one process.
//! This binary only parses flags and wires the control plane to the planes.

mod admin;
mod allocator;
mod check;
mod demo;
mod echo;
mod limits;
mod logwriter;
mod programming;
mod run;
mod wire;
mod wire_dns;
mod wire_iface;
mod wire_ingress;
mod wire_l4;

use clap::{Args, Parser, Subcommand};
use ingress::access_log;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nodeway",
    version,
    about = "Service load balancing (L4), cluster DNS and Ingress routing (L7) from one picture of the cluster",
    long_about = "nodeway reads the Kubernetes manifests you would `kubectl apply` (Services, Endpoints, \
EndpointSlices, Pods, Ingresses, IngressClasses, TLS Secrets, Namespaces) and serves them: \
ClusterIP/NodePort/externalIP traffic round-robin to ready endpoints, cluster DNS per the \
Kubernetes DNS spec, and HTTP(S) routing per networking.k8s.io/v1 Ingress. Changes to the \
manifests are picked up and swapped in atomically."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the manifests in --config (watched; changes apply live).
    Run(RunArgs),
    /// Validate manifests, print what would be served; exit 1 on any error.
    Check(CheckArgs),
    /// The embedded demo: configs/demo with built-in echo backends.
    Demo(DemoArgs),
    /// An echo backend: HTTP/1.1 + h2c and UDP on one port.
    Echo(EchoArgs),
}

/// Flags shared by `run` and `demo`.
#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Node address(es): where NodePorts bind, and Gateways without
    /// spec.addresses are served (and shown in their status).
    #[arg(long = "node-ip", value_name = "IP", default_value = "127.0.0.1")]
    pub node_ips: Vec<IpAddr>,
    /// This node's name, for traffic policy Local (default: $NODE_NAME, as
    /// the downward API sets it in a DaemonSet).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's zone (its topology.kubernetes.io/zone label), for
    /// topology-aware routing by EndpointSlice zone hints.
    #[arg(long, value_name = "ZONE")]
    pub node_zone: Option<String>,
    /// The cluster DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Admin listener: /metrics /healthz /readyz.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Worker threads (default: all cores). With 1, one thread runs
    /// everything with no work-stealing scheduler, as an nginx worker does.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How long in-flight work may finish after SIGTERM (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub l4: wire_l4::L4Args,
    #[command(flatten)]
    pub dns: wire_dns::DnsArgs,
    #[command(flatten)]
    pub ingress: wire_ingress::IngressArgs,
    #[command(flatten)]
    pub interface: wire_iface::InterfaceArgs,
}

/// Flags that change how manifests are validated and compiled.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// The NodePort range, as the API server's --service-node-port-range.
    #[arg(long, value_name = "FROM-TO", default_value = "30000-32767", value_parser = parse_port_range)]
    pub node_port_range: (u16, u16),
    /// Where Services without a clusterIP get one, as the API server's
    /// flag: one range per IP family (repeat it, or separate with a comma),
    /// the primary family first.
    #[arg(
        long,
        value_name = "CIDR",
        default_value = model::alloc::DEFAULT_SERVICE_CIDR,
        value_delimiter = ',',
        value_parser = clap::value_parser!(model::alloc::ServiceCidr)
    )]
    pub service_cluster_ip_range: Vec<model::alloc::ServiceCidr>,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("api").args(["kubernetes", "kubeconfig"]).multiple(true))]
struct RunArgs {
    /// Manifest folder(s) or file(s); folders are read recursively. With
    /// --kubernetes or --kubeconfig they are merged with the cluster, and
    /// the API's copy wins where both define an object.
    #[arg(
        long = "config",
        value_name = "PATH",
        num_args = 1..,
        required_unless_present_any = ["kubernetes", "kubeconfig"]
    )]
    config: Vec<PathBuf>,
    /// Read the cluster from the Kubernetes API with the in-cluster
    /// service account (list and watch).
    #[arg(long, conflicts_with = "kubeconfig")]
    kubernetes: bool,
    /// Read the cluster from the Kubernetes API with this kubeconfig (its
    /// server may be a plain http:// URL).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Write this node's addresses (--node-ip) into status.loadBalancer of
    /// the Ingresses served, and take them back at shutdown; write the
    /// Gateway API objects' conditions (needs get and update on
    /// ingresses/status, gatewayclasses/status, gateways/status and
    /// httproutes/status).
    #[arg(long, requires = "api")]
    publish_status: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

impl RunArgs {
    fn source(&self) -> run::Source {
        if self.kubernetes || self.kubeconfig.is_some() {
            run::Source::Api {
                kubeconfig: self.kubeconfig.clone(),
                files: self.config.clone(),
                publish_status: self.publish_status,
            }
        } else {
            run::Source::Folders(self.config.clone())
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    /// Manifest folder(s) or file(s).
    #[arg(long = "config", value_name = "PATH", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// The cluster DNS domain (for the DNS names shown).
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Fail on warnings too (a reference to a missing Service or Secret, a
    /// duplicate object...), for CI.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    ingress: wire_ingress::IngressArgs,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct EchoArgs {
    /// Address to serve on (TCP and UDP).
    #[arg(long)]
    listen: SocketAddr,
    /// The name it answers with.
    #[arg(long)]
    name: String,
}

/// Durations on the command line: `500ms`, `30s`, `5m`, `1h` or bare seconds
/// (one grammar for every flag, the same as the L4 annotations use).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    proxy::parse_duration(s).map_err(|e| e.to_string())
}

/// A timeout flag: as `parse_duration`, but above zero.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    proxy::parse_timeout(s).map_err(|e| e.to_string())
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected FROM-TO, e.g. 30000-32767")?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a range of ports"));
    }
    Ok((a, b))
}

impl ModelArgs {
    pub fn compile_options(
        &self,
        ingress: &wire_ingress::IngressArgs,
    ) -> anyhow::Result<model::CompileOptions> {
        self.check()?;
        Ok(model::CompileOptions {
            validate: model::validate::ValidateOptions {
                node_port_range: self.node_port_range.0..=self.node_port_range.1,
            },
            ingress: wire_ingress::ingress_options(ingress),
            service_cidrs: self.service_cluster_ip_range.clone(),
        })
    }

    /// At most one service range per family, as the API server allows.
    fn check(&self) -> anyhow::Result<()> {
        let ranges = &self.service_cluster_ip_range;
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[..i].iter().find(|b| b.family() == a.family()) {
                anyhow::bail!(
                    "--service-cluster-ip-range: {b} and {a} are both {}; give one range per family",
                    a.family()
                );
            }
        }
        Ok(())
    }
}

fn init_logs(format: LogFormat) {
    // hickory-server logs every query at info: too much for a DNS server.
    let default = "info,hickory_server=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let access_format = match format {
        LogFormat::Text => {
            b.init();
            access_log::Format::Text
        }
        LogFormat::Json => {
            b.json().init();
            access_log::Format::Json
        }
    };
    // The access log is not a tracing event (it is formatted for less),
    // but the log level turns it on and off as if it were one.
    if tracing::enabled!(target: "nodeway::access", tracing::Level::INFO) {
        access_log::install(access_format, logwriter::access_line);
        logwriter::start();
    }
}

/// One thread: tokio's current-thread scheduler, which costs a request
/// about 1 µs less than a one-worker multi-thread runtime (no cross-thread
/// wake-ups or work-stealing bookkeeping; `bench/RESULTS.md`).
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    // Buffered access-log lines are written however main ends.
    let _flush = logwriter::FlushOnDrop;
    // One crypto provider for the whole process (never let rustls guess).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Check(a) => {
            return match a.model.compile_options(&a.ingress) {
                Ok(opts) => check::check(&a.config, opts, &a.cluster_domain, a.strict),
                Err(e) => {
                    eprintln!("nodeway: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Run(a) => runtime(a.serve.threads)
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(a.source(), a.serve, None))),
        Command::Demo(a) => runtime(a.serve.threads)
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(demo::demo(a.serve))),
        Command::Echo(a) => runtime(None).map_err(anyhow::Error::from).and_then(|rt| {
            rt.block_on(async {
                let task = echo::start(a.listen, &a.name).await?;
                tracing::info!(listen = %a.listen, name = %a.name, "echo backend serving");
                run::shutdown_signal().await;
                task.abort();
                Ok(())
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodeway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ranges() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("x").is_err());
        assert!(parse_timeout("0s").is_err(), "a zero timeout is refused");
        assert_eq!(parse_port_range("30000-32767").unwrap(), (30000, 32767));
        assert!(parse_port_range("5-1").is_err());
    }

    /// At most one --service-cluster-ip-range per family, as the API server.
    #[test]
    fn service_ranges_one_per_family() {
        let ranges = |v: &str| {
            let cli = Cli::try_parse_from([
                "nodeway",
                "check",
                "--config",
                "x",
                "--service-cluster-ip-range",
                v,
            ])
            .unwrap();
            let Command::Check(a) = cli.command else {
                unreachable!()
            };
            a.model.compile_options(&a.ingress).map(|o| o.service_cidrs)
        };
        let dual = ranges("10.96.0.0/12,fd00:10:96::/108").unwrap();
        assert_eq!(dual.len(), 2);
        let err = ranges("10.96.0.0/12,10.200.0.0/16")
            .unwrap_err()
            .to_string();
        assert!(err.contains("are both IPv4"), "{err}");
        assert!(
            Cli::try_parse_from([
                "nodeway",
                "check",
                "--config",
                "x",
                "--service-cluster-ip-range",
                "10.0.0.0"
            ])
            .is_err()
        );
    }

    /// In a DaemonSet the downward API sets NODE_NAME; `--node-name`
    /// need not repeat it.
    #[test]
    fn node_name_defaults_to_the_environment() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run");
        let arg = run
            .get_arguments()
            .find(|a| a.get_id() == "node_name")
            .expect("--node-name");
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("NODE_NAME")));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
