//! The proxy user's rights: its Role per namespace (get pods, get secrets), narrowed by
//! `resourceNames` for a refusal, and the wait until the API server's authorizer agrees.

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::{FIELD_MANAGER, KubeApi, PROXY_ROLE, PROXY_USER, RBAC_TIMEOUT, lock, meta};

impl KubeApi {
    pub(super) async fn forbid(&self, namespace: &str, resource: &str, name: &str) {
        self.ensure_namespace(namespace).await;
        lock(&self.objects)
            .forbidden
            .entry((namespace.to_owned(), resource.to_owned()))
            .or_default()
            .insert(name.to_owned());
        self.apply_role(namespace).await;
    }

    /// Writes the proxy user's Role in `namespace` from what is created and forbidden, and
    /// waits until the authorizer decides by it.
    ///
    /// Per resource: `get` on all names while none is forbidden; else `get` on the created
    /// names that are not forbidden (no rule at all when none is left: an empty
    /// `resourceNames` would mean every name).
    pub(super) async fn apply_role(&self, namespace: &str) {
        let mut rules = Vec::new();
        // (resource, name, allowed): what the authorizer must answer once the Role holds.
        let mut expected: Vec<(String, Option<String>, bool)> = Vec::new();
        {
            let objects = lock(&self.objects);
            for resource in ["pods", "secrets"] {
                let key = (namespace.to_owned(), resource.to_owned());
                let forbidden = objects.forbidden.get(&key).cloned().unwrap_or_default();
                let created = objects.created.get(&key).cloned().unwrap_or_default();
                let rule = |names: Option<Vec<String>>| PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec![resource.to_owned()]),
                    verbs: vec!["get".to_owned()],
                    resource_names: names,
                    ..PolicyRule::default()
                };
                if forbidden.is_empty() {
                    rules.push(rule(None));
                    expected.push((resource.to_owned(), None, true));
                    continue;
                }
                let allowed: Vec<String> = created.difference(&forbidden).cloned().collect();
                if !allowed.is_empty() {
                    rules.push(rule(Some(allowed.clone())));
                }
                expected.extend(
                    allowed
                        .into_iter()
                        .map(|n| (resource.to_owned(), Some(n), true)),
                );
                expected.extend(
                    forbidden
                        .into_iter()
                        .map(|n| (resource.to_owned(), Some(n), false)),
                );
            }
        }
        let role = Role {
            metadata: meta(Some(namespace), PROXY_ROLE),
            rules: Some(rules),
        };
        Api::<Role>::namespaced(self.admin.clone(), namespace)
            .patch(
                PROXY_ROLE,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&role),
            )
            .await
            .unwrap_or_else(|e| panic!("applying Role {namespace}/{PROXY_ROLE}: {e}"));
        for (resource, name, allowed) in expected {
            self.wait_for_access(namespace, &resource, name.as_deref(), allowed)
                .await;
        }
    }

    /// Waits until a SubjectAccessReview of `get` by the proxy user answers `allowed`
    /// (the authorizer reads RBAC objects from an informer, a moment after they change).
    pub(super) async fn wait_for_access(
        &self,
        namespace: &str,
        resource: &str,
        name: Option<&str>,
        allowed: bool,
    ) {
        let reviews = Api::<SubjectAccessReview>::all(self.admin.clone());
        let review = SubjectAccessReview {
            metadata: ObjectMeta::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(PROXY_USER.to_owned()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    verb: Some("get".to_owned()),
                    resource: Some(resource.to_owned()),
                    name: name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            status: None,
        };
        let started = Instant::now();
        loop {
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .unwrap_or_else(|e| panic!("SubjectAccessReview: {e}"));
            if answer.status.is_some_and(|s| s.allowed == allowed) {
                return;
            }
            assert!(
                started.elapsed() < RBAC_TIMEOUT,
                "RBAC still does not answer allowed={allowed} for get {resource} {name:?} in \
                 {namespace} after {RBAC_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
