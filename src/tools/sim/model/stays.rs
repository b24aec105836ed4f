//! The second shop, `stays`: a travel-booking platform that shares nothing
//! with the first shop (other services, names, regions, cloud, request mix,
//! rates, latency shapes and traffic shape). It exists so that detection
//! can be judged on traffic it was not tuned on.
//!
//! Fifteen services. Users come through `edge-gateway` (the entry, about
//! 40 requests/s at the default rate, most of them searches); three more
//! services get traffic of their own: `webhook-receiver` (the payment
//! provider's callbacks, 1.5% of the entry rate), `backoffice` (an admin
//! console, 0.3/s) and `reporting` (a scheduled job, 0.2/s). Searches fan
//! out to `rate-engine` (3 to 6 quotes each), which makes it the busiest
//! service (about 80/s on average, 200/s and more at an evening peak in a
//! burst). Latency tails are heavy (log-normal with wide spreads plus
//! Pareto tails on search, quotes, the warehouse and the external APIs);
//! clients retry the payment provider, the mailer and searches, and give
//! up at their deadlines.
//!
//! Traffic: a lunchtime and a larger evening peak (UTC), weekends lower,
//! bursts of 1.3x-1.8x for 20-70 s about every 15 minutes, a benign deploy
//! about every 20 minutes and a benign configuration change (announced in
//! log records) about every 25 minutes.

use super::{
    call, db, kv_int, kv_str, op, spec, Builder, Call, ConfigKey, DailyShape, DbSystem, Model,
    OpKind, Placement, Protocol, QueueDef, ServiceSpec, Source, SourceRate, Tail, Target,
    TrafficProfile, TIMEOUT_ENTRY_MS, TIMEOUT_LONG_MS,
};

/// The regions, with their shares of the traffic.
pub const REGIONS: [(&str, f64); 2] = [("europe-west4", 0.7), ("asia-southeast1", 0.3)];

/// The message topic between `booking` and `notifier`.
const TOPIC: &str = "booking-events";

fn tail(share: f64, alpha: f64) -> Option<Tail> {
    Some(Tail {
        share,
        alpha,
        cap: 40.0,
    })
}

/// Builds the second shop. Services are defined leaves first, because an
/// operation can only call operations that already exist.
pub(super) fn build() -> Model {
    use DbSystem::{Elasticsearch, External, Postgresql, Redis};
    use Protocol::{Grpc, Http, Messaging};

    let mut b = Builder {
        services: Vec::new(),
        ops: Vec::new(),
        dbs: Vec::new(),
        db_ops: Vec::new(),
        namespace: "stays",
        provider: "gcp",
        broker: ("rabbitmq", "rabbitmq", 5672),
    };

    // --- leaves ---

    let ledger = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 380.0,
        limit_mb: 1024.0,
        pool_max: Some(12),
        pool_name: "ledger-db:5432/ledger",
        ..spec("ledger", "java", (3, 8, 2), Grpc)
    });
    let ledger_db = b.db(ledger, Postgresql, "ledger-db", "ledger");
    let entry_insert = b.db_op(ledger_db, "INSERT", "journal_entries", 4.0, 0.5);
    let balances_select = b.db_op(ledger_db, "SELECT", "account_balances", 30.0, 0.8);
    b.db_ops[balances_select].tail = tail(0.05, 1.6);
    let post_entry = b.grpc(
        ledger,
        "stays.ledger.v1.Ledger",
        "PostEntry",
        6.0,
        vec![vec![db(entry_insert)]],
    );
    let get_balances = b.grpc(
        ledger,
        "stays.ledger.v1.Ledger",
        "GetBalances",
        25.0,
        vec![vec![db(balances_select)]],
    );
    b.ops[get_balances].own_sigma = 0.7;

    let payments = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 90.0,
        limit_mb: 256.0,
        pool_max: Some(6),
        pool_name: "payments-db:5432/payments",
        ..spec("payments-adapter", "go", (0, 31, 4), Grpc)
    });
    let payments_db = b.db(payments, Postgresql, "payments-db", "payments");
    let paygate = b.db(payments, External, "api.paygate.example", "");
    let authorize_api = b.db_op(paygate, "POST", "/v2/authorizations", 180.0, 0.5);
    b.db_ops[authorize_api].tail = tail(0.03, 1.3);
    b.db_ops[authorize_api].error_rate = 0.002;
    let refund_api = b.db_op(paygate, "POST", "/v2/refunds", 250.0, 0.5);
    b.db_ops[refund_api].tail = tail(0.03, 1.3);
    let payment_insert = b.db_op(payments_db, "INSERT", "payment_intents", 3.0, 0.4);
    let paygate_call = |api| {
        Call {
            timeout_ms: 3_000.0,
            ..call(Target::Db(api))
        }
        .retries(1)
    };
    let authorize = b.grpc(
        payments,
        "stays.payments.v1.Payments",
        "Authorize",
        8.0,
        vec![
            vec![paygate_call(authorize_api)],
            vec![db(payment_insert)],
            vec![op(post_entry)],
        ],
    );
    let refund = b.grpc(
        payments,
        "stays.payments.v1.Payments",
        "Refund",
        10.0,
        vec![
            vec![paygate_call(refund_api)],
            vec![db(payment_insert)],
            vec![op(post_entry)],
        ],
    );

    let profile = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 300.0,
        limit_mb: 768.0,
        pool_max: Some(8),
        pool_name: "profile-db:5432/guests",
        ..spec("guest-profile", "kotlin", (2, 2, 9), Http)
    });
    let profile_db = b.db(profile, Postgresql, "profile-db", "guests");
    let profile_cache = b.db(profile, Redis, "profile-cache", "2");
    let profile_cached = b.db_op(profile_cache, "GET", "", 0.6, 0.4);
    let guest_select = b.db_op(profile_db, "SELECT", "guests", 2.5, 0.5);
    let preferences_update = b.db_op(profile_db, "UPDATE", "guest_preferences", 4.0, 0.5);
    let guest_get = b.http(
        profile,
        "GET",
        "/guests/{id}",
        2.5,
        vec![
            vec![db(profile_cached)],
            vec![db(guest_select).sometimes(0.15)],
        ],
    );
    let preferences_put = b.http(
        profile,
        "PUT",
        "/guests/{id}/preferences",
        6.0,
        vec![vec![db(preferences_update)]],
    );
    b.ops[preferences_put].client_error = Some((0.02, 422));

    let auth = b.service(ServiceSpec {
        replicas: 3,
        memory_mb: 70.0,
        limit_mb: 256.0,
        cpu_limit: 1.5,
        pool_max: Some(10),
        pool_name: "auth-db:5432/identity",
        ..spec("auth", "go", (4, 0, 12), Grpc)
    });
    let auth_db = b.db(auth, Postgresql, "auth-db", "identity");
    let token_cache = b.db(auth, Redis, "token-cache", "0");
    let token_get = b.db_op(token_cache, "GET", "", 0.3, 0.3);
    let token_del = b.db_op(token_cache, "DEL", "", 0.3, 0.3);
    let session_select = b.db_op(auth_db, "SELECT", "sessions", 1.8, 0.4);
    let session_insert = b.db_op(auth_db, "INSERT", "sessions", 2.5, 0.4);
    let credentials_select = b.db_op(auth_db, "SELECT", "credentials", 2.0, 0.4);
    let validate = b.grpc(
        auth,
        "stays.auth.v1.Auth",
        "ValidateToken",
        0.8,
        vec![
            vec![db(token_get)],
            vec![db(session_select).sometimes(0.05)],
        ],
    );
    b.ops[validate].own_sigma = 0.3;
    let issue = b.grpc(
        auth,
        "stays.auth.v1.Auth",
        "IssueToken",
        45.0,
        vec![vec![db(credentials_select)], vec![db(session_insert)]],
    );
    b.ops[issue].own_sigma = 0.2;
    b.ops[issue].client_error = Some((0.06, 401));
    let revoke = b.grpc(
        auth,
        "stays.auth.v1.Auth",
        "RevokeToken",
        1.5,
        vec![vec![db(token_del)]],
    );

    let availability = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 60.0,
        limit_mb: 256.0,
        pool_max: Some(10),
        pool_name: "availability-db:5432/inventory",
        ..spec("availability", "rust", (1, 19, 0), Grpc)
    });
    let availability_db = b.db(availability, Postgresql, "availability-db", "inventory");
    let nights_select = b.db_op(availability_db, "SELECT", "room_nights", 3.0, 0.5);
    let nights_update = b.db_op(availability_db, "UPDATE", "room_nights", 5.0, 0.5);
    let check = b.grpc(
        availability,
        "stays.inventory.v1.Availability",
        "CheckAvailability",
        1.5,
        vec![vec![db(nights_select)]],
    );
    let hold = b.grpc(
        availability,
        "stays.inventory.v1.Availability",
        "HoldRooms",
        4.0,
        vec![vec![db(nights_select)], vec![db(nights_update)]],
    );

    let rates = b.service(ServiceSpec {
        replicas: 3,
        memory_mb: 420.0,
        limit_mb: 1024.0,
        cpu_limit: 2.0,
        pool_max: Some(8),
        pool_name: "rates-db:5432/rates",
        ..spec("rate-engine", "python", (0, 44, 1), Grpc)
    });
    let rates_db = b.db(rates, Postgresql, "rates-db", "rates");
    let rates_cache = b.db(rates, Redis, "rates-cache", "1");
    let plans_cached = b.db_op(rates_cache, "MGET", "", 0.7, 0.4);
    let plans_select = b.db_op(rates_db, "SELECT", "rate_plans", 6.0, 0.6);
    let quote = b.grpc(
        rates,
        "stays.pricing.v1.Rates",
        "Quote",
        7.0,
        vec![
            vec![db(plans_cached)],
            vec![db(plans_select).sometimes(0.1)],
        ],
    );
    b.ops[quote].own_sigma = 0.55;
    b.ops[quote].tail = tail(0.02, 1.8);
    let quote_stay = b.grpc(
        rates,
        "stays.pricing.v1.Rates",
        "QuoteStay",
        18.0,
        vec![vec![db(plans_select)], vec![op(check)]],
    );

    let reviews = b.service(ServiceSpec {
        memory_mb: 150.0,
        pool_max: Some(6),
        pool_name: "reviews-db:5432/reviews",
        ..spec("reviews", "nodejs", (5, 1, 3), Http)
    });
    let reviews_db = b.db(reviews, Postgresql, "reviews-db", "reviews");
    let reviews_select = b.db_op(reviews_db, "SELECT", "reviews", 5.0, 0.6);
    let review_insert = b.db_op(reviews_db, "INSERT", "reviews", 4.0, 0.5);
    let reviews_list = b.http(
        reviews,
        "GET",
        "/listings/{id}/reviews",
        4.0,
        vec![vec![db(reviews_select)]],
    );
    let review_post = b.http(
        reviews,
        "POST",
        "/reviews",
        9.0,
        vec![vec![db(review_insert)]],
    );
    b.ops[review_post].client_error = Some((0.04, 400));

    // --- middle ---

    let listing = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 520.0,
        limit_mb: 1536.0,
        pool_max: Some(10),
        pool_name: "listing-db:5432/listings",
        ..spec("listing", "java", (7, 3, 0), Http)
    });
    let listing_db = b.db(listing, Postgresql, "listing-db", "listings");
    let listing_cache = b.db(listing, Redis, "listing-cache", "0");
    let listing_cached = b.db_op(listing_cache, "GET", "", 0.5, 0.3);
    let listings_cached = b.db_op(listing_cache, "MGET", "", 1.2, 0.4);
    let listing_select = b.db_op(listing_db, "SELECT", "listings", 3.0, 0.5);
    let listings_select = b.db_op(listing_db, "SELECT", "listings", 7.0, 0.6);
    let listing_get = b.http(
        listing,
        "GET",
        "/listings/{id}",
        3.0,
        vec![
            vec![db(listing_cached)],
            vec![db(listing_select).sometimes(0.2)],
            vec![op(reviews_list).sometimes(0.6).optional()],
        ],
    );
    b.ops[listing_get].client_error = Some((0.01, 404));
    let listing_batch = b.http(
        listing,
        "POST",
        "/listings/batch",
        6.0,
        vec![
            vec![db(listings_cached)],
            vec![db(listings_select).sometimes(0.3)],
        ],
    );

    let search = b.service(ServiceSpec {
        replicas: 3,
        memory_mb: 250.0,
        limit_mb: 768.0,
        cpu_limit: 2.0,
        ..spec("search", "go", (2, 14, 6), Http)
    });
    let search_index = b.db(search, Elasticsearch, "search-es", "listings-v7");
    let index_search = b.db_op(search_index, "search", "listings-v7", 22.0, 0.6);
    b.db_ops[index_search].tail = tail(0.03, 1.7);
    // Three quotes for the top results always, three more on most pages:
    // a fan-out of 3 to 6 parallel calls.
    let mut quotes = vec![op(quote); 3];
    quotes.extend([op(quote).sometimes(0.6); 3]);
    let search_get = b.http(
        search,
        "GET",
        "/search",
        10.0,
        vec![vec![db(index_search)], vec![op(listing_batch)], quotes],
    );
    b.ops[search_get].own_sigma = 0.6;
    b.ops[search_get].tail = tail(0.02, 1.6);
    let suggest = b.http(search, "GET", "/suggest", 3.0, vec![vec![db(index_search)]]);

    let booking = b.service(ServiceSpec {
        replicas: 2,
        memory_mb: 640.0,
        limit_mb: 1536.0,
        pool_max: Some(10),
        pool_name: "booking-db:5432/bookings",
        ..spec("booking", "java", (12, 0, 5), Http)
    });
    let booking_db = b.db(booking, Postgresql, "booking-db", "bookings");
    let booking_insert = b.db_op(booking_db, "INSERT", "bookings", 4.0, 0.5);
    let booking_select = b.db_op(booking_db, "SELECT", "bookings", 2.5, 0.5);
    let booking_update = b.db_op(booking_db, "UPDATE", "bookings", 3.5, 0.5);
    let booking_create = b.http(
        booking,
        "POST",
        "/bookings",
        25.0,
        vec![
            vec![op(hold), op(quote_stay)],
            vec![op(authorize).timeout(8_000.0)],
            vec![db(booking_insert)],
            vec![call(Target::Publish)],
        ],
    );
    b.ops[booking_create].own_sigma = 0.45;
    b.ops[booking_create].client_error = Some((0.03, 409));
    let booking_get = b.http(
        booking,
        "GET",
        "/bookings/{ref}",
        3.0,
        vec![vec![db(booking_select)]],
    );
    let booking_status = b.http(
        booking,
        "PATCH",
        "/bookings/{ref}/status",
        4.0,
        vec![vec![db(booking_select)], vec![db(booking_update)]],
    );

    let notifier = b.service(ServiceSpec {
        memory_mb: 200.0,
        ..spec("notifier", "python", (1, 6, 0), Messaging)
    });
    let notifier_dedup = b.db(notifier, Redis, "notifier-dedup", "3");
    let mailer = b.db(notifier, External, "api.mailer.example", "");
    let dedup_set = b.db_op(notifier_dedup, "SET", "", 0.5, 0.3);
    let send_mail = b.db_op(mailer, "POST", "/v3/mail/send", 90.0, 0.7);
    b.db_ops[send_mail].tail = tail(0.05, 1.2);
    b.db_ops[send_mail].error_rate = 0.003;
    let consume = b.add_op(notifier, OpKind::Consume { topic: TOPIC }, 6.0, 0.5);
    b.ops[consume].steps = vec![
        vec![db(dedup_set)],
        vec![op(guest_get)],
        vec![Call {
            timeout_ms: 2_000.0,
            ..call(Target::Db(send_mail))
        }
        .retries(2)],
    ];

    // --- services with traffic of their own ---

    let webhooks = b.service(ServiceSpec {
        memory_mb: 110.0,
        limit_mb: 256.0,
        cpu_limit: 0.5,
        public_host: Some("hooks.stays.example"),
        ..spec("webhook-receiver", "nodejs", (0, 9, 7), Http)
    });
    let webhook_dedup = b.db(webhooks, Redis, "webhook-dedup", "4");
    let webhook_seen = b.db_op(webhook_dedup, "SETNX", "", 0.5, 0.3);
    let webhook = b.http(
        webhooks,
        "POST",
        "/webhooks/paygate",
        3.0,
        vec![
            vec![db(webhook_seen)],
            vec![op(booking_status)],
            vec![op(post_entry)],
        ],
    );

    let backoffice = b.service(ServiceSpec {
        memory_mb: 330.0,
        limit_mb: 768.0,
        pool_max: Some(4),
        pool_name: "backoffice-db:5432/audit",
        public_host: Some("admin.stays.example"),
        ..spec("backoffice", "python", (3, 3, 1), Http)
    });
    let backoffice_db = b.db(backoffice, Postgresql, "backoffice-db", "audit");
    let audit_select = b.db_op(backoffice_db, "SELECT", "audit_log", 12.0, 0.7);
    let audit_insert = b.db_op(backoffice_db, "INSERT", "audit_log", 3.0, 0.5);
    let admin_bookings = b.http(
        backoffice,
        "GET",
        "/admin/bookings",
        35.0,
        vec![vec![db(audit_select)], vec![op(booking_get); 3]],
    );
    b.ops[admin_bookings].own_sigma = 0.6;
    let admin_refund = b.http(
        backoffice,
        "POST",
        "/admin/refunds",
        20.0,
        vec![
            vec![op(booking_get)],
            vec![op(refund).timeout(8_000.0)],
            vec![db(audit_insert)],
        ],
    );

    let reporting = b.service(ServiceSpec {
        memory_mb: 700.0,
        limit_mb: 2048.0,
        pool_max: Some(4),
        pool_name: "reporting-warehouse:5432/warehouse",
        ..spec("reporting", "python", (0, 3, 22), Http)
    });
    let warehouse = b.db(reporting, Postgresql, "reporting-warehouse", "warehouse");
    let occupancy_select = b.db_op(warehouse, "SELECT", "occupancy_daily", 150.0, 0.7);
    b.db_ops[occupancy_select].tail = tail(0.05, 1.5);
    let report_insert = b.db_op(warehouse, "INSERT", "report_runs", 5.0, 0.5);
    let report = b.http(
        reporting,
        "POST",
        "/jobs/occupancy-report",
        120.0,
        vec![
            vec![op(get_balances).timeout(TIMEOUT_LONG_MS)],
            vec![db(occupancy_select)],
            vec![db(report_insert)],
        ],
    );
    b.ops[report].own_sigma = 0.6;

    // --- the entry ---

    let gateway = b.service(ServiceSpec {
        replicas: 3,
        memory_mb: 80.0,
        limit_mb: 256.0,
        cpu_limit: 1.5,
        public_host: Some("api.stays.example"),
        ..spec("edge-gateway", "go", (1, 27, 3), Http)
    });
    let token = || op(validate).sometimes(0.7);
    let entry = |b: &mut Builder, method, route, own_ms, weight, steps| {
        let id = b.http(gateway, method, route, own_ms, steps);
        b.ops[id].own_sigma = 0.3;
        b.ops[id].weight = weight;
        id
    };
    entry(
        &mut b,
        "GET",
        "/api/search",
        1.5,
        0.40,
        vec![
            vec![token()],
            vec![op(search_get).timeout(2_500.0).retries(1)],
        ],
    );
    entry(
        &mut b,
        "GET",
        "/api/suggest",
        1.0,
        0.06,
        vec![vec![op(suggest).timeout(500.0)]],
    );
    entry(
        &mut b,
        "GET",
        "/api/listings/{id}",
        1.5,
        0.22,
        vec![vec![token()], vec![op(listing_get), op(quote)]],
    );
    entry(
        &mut b,
        "GET",
        "/api/listings/{id}/reviews",
        1.2,
        0.07,
        vec![vec![op(reviews_list)]],
    );
    entry(
        &mut b,
        "POST",
        "/api/reviews",
        1.5,
        0.005,
        vec![vec![op(validate)], vec![op(review_post)]],
    );
    entry(
        &mut b,
        "POST",
        "/api/bookings",
        2.0,
        0.03,
        vec![
            vec![op(validate)],
            vec![op(booking_create).timeout(TIMEOUT_ENTRY_MS)],
        ],
    );
    entry(
        &mut b,
        "GET",
        "/api/bookings/{ref}",
        1.2,
        0.05,
        vec![vec![op(validate)], vec![op(booking_get)]],
    );
    entry(
        &mut b,
        "POST",
        "/api/auth/token",
        1.5,
        0.04,
        vec![vec![op(issue)]],
    );
    entry(
        &mut b,
        "DELETE",
        "/api/auth/token",
        1.0,
        0.01,
        vec![vec![op(revoke)]],
    );
    entry(
        &mut b,
        "GET",
        "/api/guests/me",
        1.2,
        0.095,
        vec![vec![op(validate)], vec![op(guest_get)]],
    );
    entry(
        &mut b,
        "PUT",
        "/api/guests/me/preferences",
        1.5,
        0.02,
        vec![vec![op(validate)], vec![op(preferences_put)]],
    );

    let producer_attrs = vec![
        kv_str("messaging.system", "rabbitmq"),
        kv_str("messaging.destination.name", TOPIC),
        kv_str("messaging.operation.type", "send"),
        kv_str("messaging.operation.name", "publish"),
        kv_str("server.address", "rabbitmq"),
        kv_int("server.port", 5672),
    ];
    let queue = QueueDef {
        consumer: consume,
        producer_name: format!("publish {TOPIC}"),
        producer_attrs,
    };

    let cumulative = |ops: &[(usize, f64)]| {
        let mut total = 0.0;
        ops.iter()
            .map(|&(op, weight)| {
                total += weight;
                (op, total)
            })
            .collect::<Vec<_>>()
    };
    let entry_ops = cumulative(
        &b.services[gateway]
            .ops
            .iter()
            .map(|&op| (op, b.ops[op].weight))
            .collect::<Vec<_>>(),
    );
    let sources = vec![
        Source {
            ops: cumulative(&[(webhook, 1.0)]),
            rate: SourceRate::Share(0.015),
        },
        Source {
            ops: cumulative(&[(admin_bookings, 0.9), (admin_refund, 0.1)]),
            rate: SourceRate::Fixed(0.3),
        },
        Source {
            ops: cumulative(&[(report, 1.0)]),
            rate: SourceRate::Fixed(0.2),
        },
    ];

    let config_keys = vec![
        ConfigKey {
            service: search,
            key: "search.max_results",
            values: &["20", "25", "30", "40"],
        },
        ConfigKey {
            service: search,
            key: "search.ranking_model",
            values: &["bm25-v3", "ltr-2024-11", "ltr-2024-12"],
        },
        ConfigKey {
            service: rates,
            key: "rates.cache_ttl_seconds",
            values: &["30", "60", "120"],
        },
        ConfigKey {
            service: booking,
            key: "booking.hold_minutes",
            values: &["10", "15", "20"],
        },
        ConfigKey {
            service: gateway,
            key: "gateway.rate_limit_per_ip",
            values: &["50", "80", "100"],
        },
        ConfigKey {
            service: notifier,
            key: "notifier.batch_size",
            values: &["20", "50", "100"],
        },
        ConfigKey {
            service: payments,
            key: "payments.paygate_timeout_ms",
            values: &["3000"],
        },
        ConfigKey {
            service: listing,
            key: "listing.photo_cdn",
            values: &["cdn-a", "cdn-b"],
        },
        ConfigKey {
            service: auth,
            key: "auth.session_ttl_minutes",
            values: &["30", "60", "120"],
        },
        ConfigKey {
            service: reporting,
            key: "reporting.partition_days",
            values: &["1", "7"],
        },
    ];

    let mut model = Model {
        services: b.services,
        ops: b.ops,
        dbs: b.dbs,
        db_ops: b.db_ops,
        queue,
        entry: gateway,
        entry_ops,
        topology: super::super::Topology::default(),
        regions: &REGIONS,
        namespace: "stays",
        sources,
        traffic: TrafficProfile {
            default_rate: 40.0,
            daily: DailyShape::TwoPeaks,
            // Monday to Sunday: Friday a little busier, weekends lower.
            weekly: Some([1.0, 1.0, 1.0, 1.0, 1.05, 0.7, 0.6]),
            burst_gap_seconds: 15.0 * 60.0,
            burst_seconds: (20, 70),
            burst_factor: (1.3, 1.8),
            benign_deploy_gap_seconds: 20.0 * 60.0,
            config_change_gap_seconds: Some(25.0 * 60.0),
        },
        placement: Placement::Pool {
            nodes_per_region: 4,
        },
        config_keys,
    };
    model.topology = super::super::Topology::from_model(&model);
    model
}
