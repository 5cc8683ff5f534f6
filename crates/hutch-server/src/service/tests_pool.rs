//! Warm pools over the fake runtime: filling, claiming, falling back to a cold start,
//! staying out of lists and quotas, draining.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::fake::{caller, req, Call, Harness};
use super::pool::PoolSize;
use super::*;

/// Configures `template`'s pool and tends it until `n` sandboxes wait in it.
async fn fill(h: &Harness, template: &str, n: u32) {
    h.svc.configure_pools(BTreeMap::from([(
        template.to_string(),
        PoolSize { min: n, max: n },
    )]));
    let mut retry = HashMap::new();
    for _ in 0..200 {
        if h.svc.pools.ready_count(template) >= n {
            return;
        }
        h.svc.tend_pools(&mut retry);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the pool of {template} never held {n}");
}

fn creates(h: &Harness) -> usize {
    h.rt.calls()
        .iter()
        .filter(|c| matches!(c, Call::Create { .. }))
        .count()
}

#[tokio::test]
async fn a_create_claims_a_warmed_sandbox_and_gives_it_the_request() {
    let h = Harness::new(8);
    fill(&h, "base", 1).await;
    assert_eq!(creates(&h), 1);
    assert_eq!(
        lock(&h.ready.warms).len(),
        1,
        "the pooled sandbox was warmed"
    );
    // Waiting in the pool: nobody sees it, and its agent was started with the pool's token.
    assert_eq!(h.svc.count(), 0);
    let pool_token = lock(&h.ready.warms)[0].1.clone();
    let config: serde_json::Value = serde_json::from_str(
        &h.rt.specs()[0]
            .agent_env
            .iter()
            .find(|(k, _)| k == "HUTCH_AGENT_CONFIG")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(config["pooled"], true);
    assert_eq!(config["accessToken"], pool_token.as_str());

    let rec = h
        .svc
        .create(CreateRequest {
            env_vars: BTreeMap::from([("FOO".into(), "bar".into())]),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            timeout: Some(60),
            caller: Some(caller("key1", Some(5))),
            ..req("base")
        })
        .await
        .unwrap();
    assert_eq!(creates(&h), 1, "no new sandbox was started");
    // It warmed up at the lowest CPU share and got the default one back when claimed.
    let prio: Vec<bool> =
        h.rt.calls()
            .iter()
            .filter_map(|c| match c {
                Call::LowPriority { id, low } if *id == rec.id => Some(*low),
                _ => None,
            })
            .collect();
    assert_eq!(prio, [true, false]);
    let claims = lock(&h.ready.claims).clone();
    assert_eq!(claims.len(), 1);
    let (_, token, claim) = &claims[0];
    assert_eq!(
        token, &pool_token,
        "the claim authenticates with the pool's token"
    );
    assert_eq!(claim.env_vars["FOO"], "bar");
    assert_eq!(claim.access_token, rec.envd_access_token);
    assert!(rec.envd_access_token.is_some());
    assert_ne!(rec.envd_access_token.as_deref(), Some(pool_token.as_str()));
    assert_eq!(rec.metadata["k"], "v");
    assert_eq!(rec.key_id.as_deref(), Some("key1"));
    assert_eq!((rec.end_at - rec.started_at).num_seconds(), 60);
    assert_eq!(h.svc.get(&rec.id).unwrap().id, rec.id);
    assert_eq!(h.svc.count(), 1);
    assert_eq!(h.store.sandboxes().unwrap().0.len(), 1);
}

#[tokio::test]
async fn an_empty_pool_falls_back_to_a_cold_start() {
    let h = Harness::new(8);
    h.svc.configure_pools(BTreeMap::from([(
        "base".into(),
        PoolSize { min: 0, max: 0 },
    )]));
    let rec = h.svc.create(req("base")).await.unwrap();
    assert_eq!(creates(&h), 1);
    assert!(lock(&h.ready.claims).is_empty());
    assert_eq!(h.svc.get(&rec.id).unwrap().id, rec.id);
}

#[tokio::test]
async fn a_failed_claim_destroys_the_pooled_sandbox_and_starts_one_cold() {
    let h = Harness::new(8);
    fill(&h, "base", 1).await;
    let pooled_id = match &h.rt.calls()[0] {
        Call::Create { id, .. } => id.clone(),
        c => panic!("unexpected {c:?}"),
    };
    *lock(&h.ready.claim_failure) = Some("agent gone".into());
    let rec = h.svc.create(req("base")).await.unwrap();
    assert_ne!(rec.id, pooled_id);
    assert_eq!(h.svc.count(), 1);
    assert!(h
        .rt
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Destroy { id, .. } if *id == pooled_id)));
    assert_eq!(creates(&h), 2, "a cold start followed the failed claim");
}

#[tokio::test]
async fn no_egress_is_applied_to_a_claimed_sandbox() {
    let h = Harness::new(8);
    fill(&h, "base", 1).await;
    let rec = h
        .svc
        .create(CreateRequest {
            allow_internet_access: Some(false),
            ..req("base")
        })
        .await
        .unwrap();
    assert!(h.rt.calls().contains(&Call::SetInternet {
        slot: rec.slot,
        allowed: false
    }));
    assert_eq!(rec.allow_internet_access, Some(false));
}

#[tokio::test]
async fn pooled_sandboxes_count_against_no_key_and_hold_their_slots() {
    let h = Harness::new(4);
    let app = h.add_custom(h.custom_template("app"));
    fill(&h, "base", 3).await;
    // Three of four slots are held by the pool; a key limited to one sandbox still gets one.
    let one = h
        .svc
        .create(CreateRequest {
            caller: Some(caller("k", Some(1))),
            ..req("base")
        })
        .await
        .unwrap();
    assert_eq!(h.svc.count(), 1);
    let listed = h.svc.list(&ListQuery::default()).unwrap().0;
    assert_eq!(
        listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [one.id]
    );
    // The two still waiting hold their slots: a template without a pool gets the last
    // free one, and then none.
    h.svc.create(req(&app.name)).await.unwrap();
    let err = h.svc.create(req(&app.name)).await.unwrap_err();
    assert!(matches!(err, ServiceError::NoSlot { .. }), "{err}");
}

#[tokio::test]
async fn a_rebuilt_template_drains_its_pool() {
    let h = Harness::new(8);
    let t = h.add_custom(h.custom_template("app"));
    fill(&h, &t.id, 1).await;
    let old = h.svc.pools.ready_count(&t.id);
    assert_eq!(old, 1);
    // A new build: new layers.
    let mut rebuilt = t.clone();
    rebuilt.build_id = "b2".into();
    rebuilt.layers = vec![h.dir.0.join("templates/layers/app-id/b2")];
    h.add_custom(rebuilt);
    let rec = h.svc.create(req("app")).await.unwrap();
    assert!(
        lock(&h.ready.claims).is_empty(),
        "the stale sandbox was not claimed"
    );
    assert_eq!(rec.layers, vec![h.dir.0.join("templates/layers/app-id/b2")]);
    assert!(h
        .rt
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Destroy { .. })));
}

#[tokio::test]
async fn draining_destroys_every_waiting_sandbox_and_stops_refills() {
    let h = Harness::new(8);
    fill(&h, "base", 2).await;
    h.svc.drain_pools().await;
    assert_eq!(h.svc.pools.ready_count("base"), 0);
    let destroyed =
        h.rt.calls()
            .iter()
            .filter(|c| matches!(c, Call::Destroy { .. }))
            .count();
    assert_eq!(destroyed, 2);
    h.svc.tend_pools(&mut HashMap::new());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(creates(&h), 2, "no refill after the drain");
    assert!(Arc::strong_count(&h.svc) >= 1);
}

#[tokio::test]
async fn pool_sizes_set_through_the_service_are_kept_and_win_over_flags() {
    let h = Harness::new(8);
    let info = h.svc.set_pool("base", 0, 3).unwrap();
    assert_eq!((info.min, info.max), (0, 3));
    assert!(h.svc.set_pool("base", 4, 2).is_err());
    assert!(h.svc.set_pool("nope", 1, 1).is_err());
    h.svc.configure_pools(BTreeMap::from([(
        "base".into(),
        PoolSize { min: 1, max: 1 },
    )]));
    let info = h.svc.pool_info("base").unwrap();
    assert_eq!((info.min, info.max), (0, 3));
}
