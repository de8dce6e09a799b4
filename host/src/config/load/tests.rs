//! Unit tests for configuration loading: every error names the file, the line and the field.

use std::path::Path;

use super::*;

const GOOD: &str = "\
apiVersion: weft/v1
kind: Plugin
metadata: {name: auth}
spec:
  url: builtin://auth
---
apiVersion: weft/v1
kind: FilterChain
metadata: {name: edge}
spec:
  filters:
    - plugin: auth
      config: {issuer: me}
---
apiVersion: weft/v1
kind: Cluster
metadata: {name: web}
spec:
  endpoints: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]
  loadBalancer: LEAST_REQUEST
  connectTimeout: 250ms
---
apiVersion: weft/v1
kind: Listener
metadata: {name: public}
spec:
  address: 127.0.0.1:0
  filterChain: edge
  defaultCluster: web
  tls: {certificate: server.pem, privateKey: server.key}
";

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str(Path::new("/etc/weft/weft.yaml"), text).map(|(config, _)| config)
}

fn error(text: &str) -> ConfigError {
    match load(text) {
        Ok(_) => panic!("expected the config to be rejected"),
        Err(e) => e,
    }
}

#[test]
fn a_good_file_resolves_all_four_kinds() {
    let config = load(GOOD).expect("good config");
    let cluster = &config.clusters["web"];
    assert_eq!(cluster.endpoints.len(), 2);
    assert_eq!(cluster.load_balancer, LoadBalancerKind::LeastRequest);
    assert_eq!(
        cluster.connect_timeout,
        std::time::Duration::from_millis(250)
    );
    let listener = &config.listeners["public"];
    assert_eq!(listener.default_cluster.as_deref(), Some("web"));
    assert_eq!(listener.limits.max_request_headers, 100);
    assert_eq!(listener.limits.max_request_headers_bytes, 60 * 1024);
    let tls = listener.tls.as_ref().expect("tls");
    assert_eq!(
        tls.certificate,
        Path::new("/etc/weft/server.pem"),
        "relative paths resolve against the file"
    );
    let chain = &config.filter_chains["edge"];
    assert_eq!(&*chain.filters[0].name, "auth");
    assert_eq!(&*chain.filters[0].config_json, r#"{"issuer":"me"}"#);
    assert_eq!(
        config.plugins["auth"].source,
        PluginSource::Builtin("auth".into())
    );
}

#[test]
fn unknown_field_names_line_and_field() {
    let text = GOOD.replace(
        "  connectTimeout: 250ms",
        "  connectTimeout: 250ms\n  conectTimeout: 1s",
    );
    let e = error(&text);
    assert_eq!(e.line, Some(22), "{e}");
    assert!(e.message.contains("unknown field `conectTimeout`"), "{e}");
    assert_eq!(e.field, "spec.conectTimeout", "{e:?}");
    assert_eq!(
        e.resource.as_deref(),
        Some(&("Cluster".into(), "web".into()))
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(
            "/etc/weft/weft.yaml:22: field `spec.conectTimeout`: unknown field `conectTimeout`"
        ),
        "{shown}"
    );
}

#[test]
fn bad_duration_names_line_and_field() {
    let e = error(&GOOD.replace("250ms", "soon"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(21), "spec.connectTimeout"),
        "{e}"
    );
    assert!(e.message.contains("invalid duration `soon`"), "{e}");
}

#[test]
fn bad_address_names_line_and_field() {
    let e = error(&GOOD.replace("127.0.0.1:0", "127.0.0.1:http"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(27), "spec.address"),
        "{e}"
    );
    let e = error(&GOOD.replace("\"127.0.0.1:8081\"", "\"127.0.0.1\""));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(19), "spec.endpoints[1]"),
        "{e}"
    );
    assert!(e.message.contains("not host:port"), "{e}");
    assert_eq!(
        e.resource.as_deref(),
        Some(&("Cluster".into(), "web".into()))
    );
}

#[test]
fn dangling_references_name_line_and_field() {
    let e = error(&GOOD.replace("defaultCluster: web", "defaultCluster: api"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(29), "spec.defaultCluster"),
        "{e}"
    );
    assert!(e.message.contains("no Cluster named `api`"), "{e}");
    let e = error(&GOOD.replace("filterChain: edge", "filterChain: inner"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(28), "spec.filterChain"),
        "{e}"
    );
    let e = error(&GOOD.replace("    - plugin: auth", "    - plugin: authz"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(12), "spec.filters[0].plugin"),
        "{e}"
    );
}

#[test]
fn duplicate_names_point_at_the_second_definition() {
    let text = format!(
        "{GOOD}---\napiVersion: weft/v1\nkind: Cluster\nmetadata:\n  name: web\nspec:\n  endpoints: [\"127.0.0.1:9\"]\n"
    );
    let e = error(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(35), "metadata.name"),
        "{e}"
    );
    assert!(e.message.contains("duplicate Cluster name `web`"), "{e}");
}

#[test]
fn duplicate_filter_instances_are_rejected() {
    let text = GOOD.replace("      config: {issuer: me}", "    - plugin: auth");
    let e = error(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(13), "spec.filters[1]"),
        "{e}"
    );
}

#[test]
fn unknown_kind_and_version_are_rejected() {
    let e = error(&GOOD.replace("kind: Plugin", "kind: Route"));
    assert_eq!((e.line, e.field.as_str()), (Some(2), "kind"), "{e}");
    let e = error(&GOOD.replacen("apiVersion: weft/v1", "apiVersion: weft/v2", 1));
    assert_eq!((e.line, e.field.as_str()), (Some(1), "apiVersion"), "{e}");
}

#[test]
fn bad_enum_values_name_the_field() {
    let e = error(&GOOD.replace("LEAST_REQUEST", "FASTEST"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(20), "spec.loadBalancer"),
        "{e}"
    );
}

#[test]
fn plugin_urls_and_pins_are_checked() {
    let e = error(&GOOD.replace("builtin://auth", "ftp://x/auth.wasm"));
    assert_eq!((e.line, e.field.as_str()), (Some(5), "spec.url"), "{e}");
    let e = error(&GOOD.replace(
        "  url: builtin://auth",
        "  url: builtin://auth\n  sha256: abc",
    ));
    assert_eq!((e.line, e.field.as_str()), (Some(6), "spec.sha256"), "{e}");
    let ok = load(&GOOD.replace("builtin://auth", "registry://auth@1.2.0")).expect("registry url");
    assert_eq!(
        ok.plugins["auth"].source,
        PluginSource::Registry {
            name: "auth".into(),
            version: Some("1.2.0".into())
        }
    );
    let ok = load(&GOOD.replace("builtin://auth", "filters/auth.wasm")).expect("relative url");
    assert_eq!(
        ok.plugins["auth"].source,
        PluginSource::File("/etc/weft/filters/auth.wasm".into())
    );
}

#[test]
fn empty_cluster_and_zero_limits_are_rejected() {
    let e = error(&GOOD.replace("[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]", "[]"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(19), "spec.endpoints"),
        "{e}"
    );
    let text = GOOD.replace(
        "  defaultCluster: web",
        "  defaultCluster: web\n  limits:\n    maxConnections: 0",
    );
    let e = error(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(31), "spec.limits.maxConnections"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_errors_carry_the_file_line() {
    let e = error(&GOOD.replace(
        "  loadBalancer: LEAST_REQUEST",
        "  loadBalancer: [LEAST_REQUEST",
    ));
    assert!(e.line.is_some_and(|l| l >= 20), "{e}");
}

#[test]
fn comments_and_empty_documents_are_ignored() {
    let text = format!("# weft config\n---\n{GOOD}---\n# trailing\n");
    load(&text).expect("comments only documents are skipped");
}
