use super::*;
use model::{Builder, CompileOptions};
use std::path::Path;

#[test]
fn cluster_ips_and_external_ips_of_services_this_node_proxies() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIPs: [10.96.0.10, fd00::10], ipFamilyPolicy: PreferDualStack, externalIPs: [192.0.2.7], ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: headless}\nspec: {clusterIP: None, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: example.org}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: elsewhere}}\nspec: {clusterIP: 10.96.0.11, ports: [{port: 80}]}\n";
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("x.yaml"), Some(yaml.as_bytes()));
    let snap = b.build();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let got: Vec<String> = wanted(&snap).iter().map(|ip| ip.to_string()).collect();
    assert_eq!(got, ["10.96.0.10", "192.0.2.7", "fd00::10"]);
}
