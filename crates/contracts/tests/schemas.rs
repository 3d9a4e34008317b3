//! The JSON Schemas under `docs/events/` are generated from the contract types and must stay in
//! sync. Run with `UPDATE_EVENT_SCHEMAS=1` to rewrite them after changing a contract.

use std::path::PathBuf;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
}

#[test]
fn checked_in_schemas_match_the_contract_types() {
    let update = std::env::var_os("UPDATE_EVENT_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for entry in contracts::catalog() {
        let path = schema_dir().join(&entry.schema_file);
        let mut expected = serde_json::to_string_pretty(&entry.schema).expect("schema serialises");
        expected.push('\n');
        if update {
            std::fs::create_dir_all(schema_dir()).expect("docs/events exists");
            std::fs::write(&path, &expected).expect("schema written");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(actual) if actual == expected => {}
            _ => stale.push(entry.schema_file.clone()),
        }
    }
    assert!(
        stale.is_empty(),
        "event schemas out of date: {stale:?}; run `UPDATE_EVENT_SCHEMAS=1 cargo test -p contracts` and commit docs/events"
    );
}

#[test]
fn every_event_type_names_its_version_and_topic_is_known() {
    let topics = [
        contracts::USERS,
        contracts::PRODUCTS,
        contracts::ORDERS,
        contracts::PAYMENTS,
    ];
    for entry in contracts::catalog() {
        assert!(
            entry
                .cloud_event_type
                .ends_with(&format!(".v{}", entry.version)),
            "{}",
            entry.name
        );
        assert!(topics.contains(&entry.topic), "{}", entry.name);
    }
}

#[test]
fn payloads_round_trip_and_reject_unknown_fields() {
    let event = contracts::ProductDeleted {
        product_id: uuid::Uuid::nil(),
    };
    let json = serde_json::to_value(&event).expect("serialises");
    let back: contracts::ProductDeleted = serde_json::from_value(json).expect("parses");
    assert_eq!(back, event);
    let extra = serde_json::json!({"product_id": uuid::Uuid::nil(), "surprise": 1});
    assert!(serde_json::from_value::<contracts::ProductDeleted>(extra).is_err());
}
