//! Resource tests, on real redb files: sets validated as a whole with what is stored, one
//! version bump per accepted change, nothing changed by a rejected one.

use std::{path::Path, sync::Arc};

use super::*;
use crate::{
    registry::{Registry, sha256_hex},
    store::RedbStore,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CLUSTER: &str = "\
apiVersion: weft/v1
kind: Cluster
metadata: {name: web}
spec:
  endpoints: [\"127.0.0.1:8080\"]
";

const PLUGIN_AND_CHAIN: &str = "\
apiVersion: weft/v1
kind: Plugin
metadata: {name: router}
spec:
  url: builtin://router
---
apiVersion: weft/v1
kind: FilterChain
metadata: {name: edge}
spec:
  filters:
    - plugin: router
      config: {routes: [{cluster: web}]}
";

const LISTENER: &str = "\
apiVersion: weft/v1
kind: Listener
metadata: {name: public}
spec:
  address: 127.0.0.1:0
  filterChain: edge
  defaultCluster: web
";

fn open(dir: &Path) -> Result<(Resources, Registry), StoreError> {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir)?);
    Ok((Resources::new(store.clone()), Registry::new(store)))
}

fn rejection(result: Result<Applied, ResourceError>) -> Rejection {
    match result {
        Err(ResourceError::Invalid(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn names(resources: &[StoredResource]) -> Vec<String> {
    resources
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect()
}

#[test]
fn a_whole_set_is_stored_with_one_version_bump() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    assert_eq!(resources.version()?, 0);
    let text = format!("{CLUSTER}---\n{PLUGIN_AND_CHAIN}---\n{LISTENER}");
    let applied = resources.apply(&text)?;
    assert_eq!(applied.version, 1);
    let actions: Vec<(&str, Action)> = applied
        .changes
        .iter()
        .map(|c| (c.name.as_str(), c.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("web", Action::Created),
            ("router", Action::Created),
            ("edge", Action::Created),
            ("public", Action::Created)
        ]
    );
    assert_eq!(
        names(&resources.list(None)?),
        [
            "Cluster/web",
            "FilterChain/edge",
            "Listener/public",
            "Plugin/router"
        ]
    );
    assert_eq!(resources.get("Cluster", "web")?.yaml, CLUSTER);
    let snapshot = resources.snapshot()?;
    assert_eq!((snapshot.version, snapshot.resources.len()), (1, 4));
    Ok(())
}

#[test]
fn applies_build_on_what_is_stored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    assert_eq!(resources.apply(CLUSTER)?.version, 1);
    assert_eq!(resources.apply(PLUGIN_AND_CHAIN)?.version, 2);
    assert_eq!(resources.apply(LISTENER)?.version, 3);
    Ok(())
}

#[test]
fn a_dangling_reference_is_refused_with_its_line_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    resources.apply(CLUSTER)?;
    let refused = rejection(resources.apply(LISTENER));
    assert_eq!(refused.location, Location::Input(Some(6)));
    assert_eq!(refused.field, "spec.filterChain");
    assert_eq!(
        refused.to_string(),
        "line 6: field `spec.filterChain`: no FilterChain named `edge`"
    );
    let refused = rejection(resources.apply(&format!(
        "{CLUSTER}---\n{}",
        PLUGIN_AND_CHAIN.replace("- plugin: router", "- plugin: auth")
    )));
    assert_eq!(
        refused.to_string(),
        "line 18: field `spec.filters[0].plugin`: no Plugin named `auth`"
    );
    assert_eq!(resources.version()?, 1);
    assert_eq!(names(&resources.list(None)?), ["Cluster/web"]);
    Ok(())
}

#[test]
fn bad_fields_and_values_are_refused_with_line_and_field() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    let refused = rejection(resources.apply(&CLUSTER.replace("  endpoints", "  endpoint")));
    assert_eq!(refused.location, Location::Input(Some(5)));
    assert!(
        refused.message.contains("unknown field `endpoint`"),
        "{refused}"
    );
    let refused = rejection(resources.apply(&format!("{CLUSTER}  connectTimeout: soon\n")));
    assert_eq!(
        (&refused.location, refused.field.as_str()),
        (&Location::Input(Some(6)), "spec.connectTimeout")
    );
    let refused = rejection(resources.apply(&CLUSTER.replace("kind: Cluster", "kind: Route")));
    assert_eq!(
        refused.to_string(),
        "line 2: field `kind`: unknown kind `Route`, expected Listener, Cluster, FilterChain or Plugin"
    );
    let refused = rejection(resources.apply("apiVersion: weft/v1\nkind: [Cluster\n"));
    assert!(
        matches!(refused.location, Location::Input(Some(_))),
        "{refused}"
    );
    let refused = rejection(resources.apply(&format!("{CLUSTER}---\n{CLUSTER}")));
    assert!(
        refused.message.contains("duplicate Cluster name `web`"),
        "{refused}"
    );
    assert!(matches!(
        resources.apply("# nothing\n---\n"),
        Err(ResourceError::Empty)
    ));
    assert_eq!(resources.version()?, 0);
    assert!(resources.list(None)?.is_empty());
    Ok(())
}

#[test]
fn unknown_builtin_plugins_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    let refused = rejection(
        resources.apply(&PLUGIN_AND_CHAIN.replace("builtin://router", "builtin://routr")),
    );
    assert_eq!(
        (&refused.location, refused.field.as_str()),
        (&Location::Input(Some(5)), "spec.url")
    );
    assert!(
        refused.message.contains("no built-in plugin named `routr`"),
        "{refused}"
    );
    assert!(
        refused.message.contains("`router`"),
        "lists the builtins: {refused}"
    );
    // A sha256 pin on a builtin is checked against the embedded bytes.
    let pin = "0".repeat(64);
    let refused = rejection(resources.apply(&PLUGIN_AND_CHAIN.replace(
        "  url: builtin://router",
        &format!("  url: builtin://router\n  sha256: {pin}"),
    )));
    assert_eq!(refused.field, "spec.sha256");
    assert_eq!(resources.version()?, 0);
    Ok(())
}

#[test]
fn registry_plugins_must_be_published() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, registry) = open(dir.path())?;
    let plugin = |url: &str| {
        format!(
            "apiVersion: weft/v1\nkind: Plugin\nmetadata: {{name: hello}}\nspec:\n  url: \"{url}\"\n"
        )
    };
    let refused = rejection(resources.apply(&plugin("registry://hello")));
    assert_eq!(
        refused.to_string(),
        "line 5: field `spec.url`: `hello` has no published version in the registry; publish it with `weft plugin publish`"
    );
    let bytes = std::fs::read(weft_test_artifacts::PASSTHROUGH_WASIP1)?;
    registry.publish("hello", "1.0.0", &bytes)?;
    let refused = rejection(resources.apply(&plugin("registry://hello@2.0.0")));
    assert!(
        refused.message.starts_with("hello@2.0.0 is not published"),
        "{refused}"
    );
    resources.apply(&plugin("registry://hello"))?;
    resources.apply(&plugin("registry://hello@1.0.0"))?;
    // The registry's `NAME@VERSION` shorthand is a registry reference too.
    resources.apply(&plugin("hello@1.0.0"))?;
    let refused = rejection(resources.apply(&plugin("hello@3.0.0")));
    assert_eq!(refused.field, "spec.url");
    // A pin must match the published module.
    let pinned = |sha: &str| format!("{}  sha256: {sha}\n", plugin("registry://hello@1.0.0"));
    resources.apply(&pinned(&sha256_hex(&bytes)))?;
    let refused = rejection(resources.apply(&pinned(&"f".repeat(64))));
    assert_eq!(
        (&refused.location, refused.field.as_str()),
        (&Location::Input(Some(6)), "spec.sha256")
    );
    assert_eq!(resources.version()?, 4);
    Ok(())
}

#[test]
fn reapplying_the_same_text_changes_nothing_and_an_edit_bumps() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    resources.apply(CLUSTER)?;
    let again = resources.apply(CLUSTER)?;
    assert_eq!(again.version, 1);
    assert_eq!(again.changes[0].action, Action::Unchanged);
    let edited = CLUSTER.replace("8080", "9090");
    let applied = resources.apply(&format!("{edited}---\n{PLUGIN_AND_CHAIN}"))?;
    assert_eq!(applied.version, 2);
    assert_eq!(applied.changes[0].action, Action::Updated);
    assert_eq!(resources.get("cluster", "web")?.yaml, edited);
    Ok(())
}

#[test]
fn delete_is_refused_while_another_resource_refers_to_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    resources.apply(&format!("{CLUSTER}---\n{PLUGIN_AND_CHAIN}---\n{LISTENER}"))?;
    match resources.delete("FilterChain", "edge") {
        Err(e @ ResourceError::InUse { .. }) => assert_eq!(
            e.to_string(),
            "cannot delete FilterChain `edge`: Listener `public` refers to it (spec.filterChain: no FilterChain named `edge`)"
        ),
        other => panic!("expected InUse, got {other:?}"),
    }
    match resources.delete("Plugin", "router") {
        Err(e @ ResourceError::InUse { .. }) => {
            assert!(
                e.to_string().contains("FilterChain `edge` refers to it"),
                "{e}"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(resources.version()?, 1);
    assert_eq!(resources.delete("Listener", "public")?, 2);
    assert_eq!(resources.delete("filterchain", "edge")?, 3);
    assert!(matches!(
        resources.delete("Listener", "public"),
        Err(ResourceError::NotFound { .. })
    ));
    assert_eq!(resources.version()?, 3);
    assert_eq!(
        names(&resources.list(None)?),
        ["Cluster/web", "Plugin/router"]
    );
    Ok(())
}

#[test]
fn kinds_are_checked_and_matched_without_case() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (resources, _) = open(dir.path())?;
    resources.apply(&format!("{CLUSTER}---\n{PLUGIN_AND_CHAIN}"))?;
    assert_eq!(names(&resources.list(Some("CLUSTER"))?), ["Cluster/web"]);
    assert_eq!(resources.get("filterChain", "edge")?.kind, "FilterChain");
    assert!(matches!(
        resources.list(Some("Route")),
        Err(ResourceError::UnknownKind(_))
    ));
    assert!(matches!(
        resources.get("Cluster", "api"),
        Err(ResourceError::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn a_reopened_store_has_every_resource_and_the_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (resources, _) = open(dir.path())?;
        resources.apply(&format!("{CLUSTER}---\n{PLUGIN_AND_CHAIN}"))?;
        resources.apply(LISTENER)?;
    }
    let (resources, _) = open(dir.path())?;
    assert_eq!(resources.version()?, 2);
    assert_eq!(resources.list(None)?.len(), 4);
    assert_eq!(resources.get("Listener", "public")?.yaml, LISTENER);
    // Validation after the restart still sees the stored set.
    assert!(matches!(
        resources.delete("Cluster", "web"),
        Err(ResourceError::InUse { .. })
    ));
    Ok(())
}
