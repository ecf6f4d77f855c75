//! Generated inputs on the URL path: a Secret's Redis or database URL can hold anything its
//! author typed. The parsers the operator and the CLI hand it to (the redis crate, sqlx's
//! `PgConnectOptions`, after our SQLAlchemy-scheme normalisation) must answer with an error or
//! options — never panic — before any connection is attempted (nothing here opens a socket).

use std::str::FromStr;

use bifrost_requirements::database::normalize_database_url;
use proptest::prelude::*;
use sqlx::postgres::PgConnectOptions;

/// URL-like text: a scheme we accept (or not), then hostile authority, path and query parts.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("redis://"),
        Just("rediss://"),
        Just("redis+unix://"),
        Just("unix://"),
        Just("postgresql://"),
        Just("postgresql+asyncpg://"),
        Just("postgres://"),
        Just(""),
        Just("://"),
    ];
    let part = prop_oneof![
        "\\PC{0,30}",
        "[:@/?#%\\[\\]=&+ ]{0,12}",
        "%[0-9A-Fa-f]{0,2}",
        Just("[::1".to_string()),
        Just("127.0.0.1:99999999999999999999".to_string()),
        Just("host=/tmp password='a b' sslmode=".to_string()),
        "[\\x00-\\x1f]{0,4}",
    ];
    (scheme, proptest::collection::vec(part, 0..6))
        .prop_map(|(s, parts)| format!("{s}{}", parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn redis_urls_parse_or_fail_without_panicking(url in url_like()) {
        let _ = redis::Client::open(url.as_str());
    }

    #[test]
    fn database_urls_parse_or_fail_without_panicking(url in url_like()) {
        let normalized = normalize_database_url(&url);
        let _ = PgConnectOptions::from_str(&normalized);
    }
}
