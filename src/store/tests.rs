use super::*;

#[test]
fn placeholder_store_builds() {
    let store = Store::new(StoreConfig::default());
    assert_eq!(store.n_series(), 0);
}
