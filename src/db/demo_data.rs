//! The demo database: the books of *Harborline Trading Co.*, a fictional company that sells
//! groceries, household goods, office supplies and gear to consumers and businesses in six
//! sales regions. It gives a first-time user (and the model they connect) something worth
//! exploring without access to a real server: joins across seventeen foreign keys, a manager
//! hierarchy, money, dates, NULLs, a little binary data and long free text for keyword search.
//!
//! # Tables
//!
//! | table             | rows    | what a row is                                                     |
//! |-------------------|---------|-------------------------------------------------------------------|
//! | `regions`         | 6       | a sales region (North America, Western Europe, …)                 |
//! | `employees`       | 150     | a member of staff; `manager_id` points at their manager (NULL for the CEO) |
//! | `warehouses`      | 12      | a distribution centre, two per region, run by an employee         |
//! | `categories`      | 12      | a product category                                                |
//! | `suppliers`       | 40      | a vendor the company buys from                                    |
//! | `products`        | 500     | a catalogue item; a few carry a tiny PNG `thumbnail`              |
//! | `customers`       | 5,000   | a consumer or business account, optionally with an account manager |
//! | `orders`          | 15,000  | an order, with its shipping and delivery timestamps               |
//! | `order_lines`     | 48,767  | a line of an order; primary key `(order_id, line_no)`             |
//! | `support_tickets` | 3,000   | a customer-service case with a long `description` and `resolution` |
//!
//! 72,487 rows in all. Every table declares its primary key, every reference is a
//! declared `FOREIGN KEY` with an index on the referencing column, and the data passes
//! `PRAGMA foreign_key_check`.
//!
//! # Types
//!
//! Identifiers are `INTEGER`; names and codes `VARCHAR(n)`; long text `TEXT`; dates are
//! ISO-8601 text in `DATE` columns (`2024-03-15`) and UTC timestamps in `DATETIME` columns
//! (`2024-03-15T10:22:05Z`); flags are 0/1 in `BOOLEAN` columns; money is `DECIMAL(p,2)` in US
//! dollars. Money is bound as text with exactly two decimals, but SQLite gives a `DECIMAL`
//! column NUMERIC affinity, so it stores `'12.50'` as the REAL `12.5` (and `'12.00'` as the
//! INTEGER `12`); every amount is still the nearest double to a whole number of cents.
//!
//! # Determinism
//!
//! Nothing depends on the clock, the machine or a hash seed: values come from a SplitMix64
//! generator with fixed seeds (one stream per table), integer arithmetic and fixed pools of
//! names and phrases. The data is "as of" `AS_OF`, 2025-06-30 18:00 UTC: orders placed in
//! the last days before it are still pending or in transit and recent tickets are still open.
//! Any change to what is generated must bump [`DEMO_VERSION`], which is written to
//! `PRAGMA user_version` so a file made by an older generator can be spotted and rebuilt.

use std::collections::HashSet;

use rusqlite::{Connection, Transaction, ffi, params};

/// Version of the generated content, stored in `PRAGMA user_version` of the demo file.
pub const DEMO_VERSION: i64 = 1;

/// The fictional company whose data this is.
const COMPANY: &str = "Harborline Trading Co.";
/// Mail domain of the company's staff (`.example` is reserved, so no address is real).
const COMPANY_DOMAIN: &str = "harborline.example";

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// The moment the data is a snapshot of, in seconds since the Unix epoch.
const AS_OF: i64 = days_from_civil(2025, 6, 30) * DAY + 18 * HOUR;
/// First day orders were taken.
const FIRST_ORDER_DAY: i64 = days_from_civil(2022, 1, 1);

const CUSTOMER_COUNT: usize = 5_000;
const ORDER_COUNT: usize = 15_000;
const PRODUCT_COUNT: usize = 500;
const SUPPLIER_COUNT: usize = 40;
const TICKET_COUNT: usize = 3_000;

/// Creates the schema and fills it. Idempotent only on an empty database; runs in one transaction.
///
/// Refuses (with `SQLITE_ERROR`, changing nothing) a database that already holds any table,
/// index or view. Foreign keys are enforced during generation and the connection's previous
/// `foreign_keys` setting is restored afterwards.
pub fn generate(conn: &mut Connection) -> rusqlite::Result<()> {
    let objects: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        [],
        |r| r.get(0),
    )?;
    if objects > 0 {
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ERROR),
            Some("the demo database can only be generated into an empty database".into()),
        ));
    }
    // `foreign_keys` is a no-op inside a transaction, so it is switched before opening one.
    let fk_before: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    let result = build(conn);
    let restore = conn.execute_batch(&format!("PRAGMA foreign_keys = {fk_before}"));
    result.and(restore)
}

/// Everything that happens inside the one transaction.
fn build(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    let mut emails = HashSet::new();
    insert_regions(&tx)?;
    let employees = insert_employees(&tx, &mut emails)?;
    insert_warehouses(&tx)?;
    insert_categories(&tx)?;
    let suppliers_by_category = insert_suppliers(&tx)?;
    let products = insert_products(&tx, &suppliers_by_category)?;
    let customers = insert_customers(&tx, &employees, &mut emails)?;
    let orders = insert_orders(&tx, &customers, &employees, &products)?;
    insert_tickets(&tx, &customers, &employees, &products, &orders)?;
    tx.execute_batch(INDEXES)?;
    tx.execute_batch(&format!("PRAGMA user_version = {DEMO_VERSION}"))?;
    tx.commit()
}

const SCHEMA: &str = "
CREATE TABLE regions (
    region_id   INTEGER PRIMARY KEY,
    name        VARCHAR(60) NOT NULL UNIQUE,
    code        VARCHAR(8)  NOT NULL UNIQUE
);
CREATE TABLE employees (
    employee_id      INTEGER PRIMARY KEY,
    first_name       VARCHAR(50)  NOT NULL,
    last_name        VARCHAR(50)  NOT NULL,
    email            VARCHAR(120) NOT NULL UNIQUE,
    phone            VARCHAR(30),
    job_title        VARCHAR(80)  NOT NULL,
    department       VARCHAR(40)  NOT NULL,
    manager_id       INTEGER REFERENCES employees (employee_id),
    region_id        INTEGER NOT NULL REFERENCES regions (region_id),
    hire_date        DATE NOT NULL,
    termination_date DATE,
    salary           DECIMAL(10,2) NOT NULL,
    is_active        BOOLEAN NOT NULL,
    bio              TEXT
);
CREATE TABLE warehouses (
    warehouse_id     INTEGER PRIMARY KEY,
    region_id        INTEGER NOT NULL REFERENCES regions (region_id),
    manager_id       INTEGER REFERENCES employees (employee_id),
    name             VARCHAR(80) NOT NULL UNIQUE,
    city             VARCHAR(60) NOT NULL,
    country          VARCHAR(60) NOT NULL,
    capacity_pallets INTEGER NOT NULL,
    opened_on        DATE NOT NULL
);
CREATE TABLE categories (
    category_id INTEGER PRIMARY KEY,
    name        VARCHAR(60) NOT NULL UNIQUE,
    description TEXT NOT NULL
);
CREATE TABLE suppliers (
    supplier_id        INTEGER PRIMARY KEY,
    company_name       VARCHAR(100) NOT NULL UNIQUE,
    contact_name       VARCHAR(100) NOT NULL,
    email              VARCHAR(120) NOT NULL,
    phone              VARCHAR(30),
    city               VARCHAR(60) NOT NULL,
    country            VARCHAR(60) NOT NULL,
    payment_terms_days INTEGER NOT NULL,
    is_preferred       BOOLEAN NOT NULL
);
CREATE TABLE products (
    product_id      INTEGER PRIMARY KEY,
    sku             VARCHAR(20)  NOT NULL UNIQUE,
    name            VARCHAR(120) NOT NULL,
    category_id     INTEGER NOT NULL REFERENCES categories (category_id),
    supplier_id     INTEGER NOT NULL REFERENCES suppliers (supplier_id),
    unit_price      DECIMAL(10,2) NOT NULL,
    unit_cost       DECIMAL(10,2) NOT NULL,
    units_in_stock  INTEGER NOT NULL,
    reorder_level   INTEGER NOT NULL,
    weight_kg       REAL NOT NULL,
    is_discontinued BOOLEAN NOT NULL,
    thumbnail       BLOB
);
CREATE TABLE customers (
    customer_id        INTEGER PRIMARY KEY,
    first_name         VARCHAR(50)  NOT NULL,
    last_name          VARCHAR(50)  NOT NULL,
    company_name       VARCHAR(100),
    segment            VARCHAR(20)  NOT NULL,
    email              VARCHAR(120) NOT NULL UNIQUE,
    phone              VARCHAR(30),
    city               VARCHAR(60)  NOT NULL,
    country            VARCHAR(60)  NOT NULL,
    region_id          INTEGER NOT NULL REFERENCES regions (region_id),
    account_manager_id INTEGER REFERENCES employees (employee_id),
    signup_date        DATE NOT NULL,
    is_vip             BOOLEAN NOT NULL,
    marketing_opt_in   BOOLEAN NOT NULL,
    credit_limit       DECIMAL(10,2),
    notes              TEXT
);
CREATE TABLE orders (
    order_id        INTEGER PRIMARY KEY,
    customer_id     INTEGER NOT NULL REFERENCES customers (customer_id),
    employee_id     INTEGER REFERENCES employees (employee_id),
    warehouse_id    INTEGER NOT NULL REFERENCES warehouses (warehouse_id),
    order_date      DATETIME NOT NULL,
    channel         VARCHAR(20) NOT NULL,
    status          VARCHAR(20) NOT NULL,
    shipped_at      DATETIME,
    delivered_at    DATETIME,
    shipping_method VARCHAR(20) NOT NULL,
    shipping_cost   DECIMAL(10,2) NOT NULL,
    total_amount    DECIMAL(12,2) NOT NULL,
    payment_method  VARCHAR(30) NOT NULL,
    ship_city       VARCHAR(60) NOT NULL,
    ship_country    VARCHAR(60) NOT NULL
);
CREATE TABLE order_lines (
    order_id         INTEGER NOT NULL REFERENCES orders (order_id),
    line_no          INTEGER NOT NULL,
    product_id       INTEGER NOT NULL REFERENCES products (product_id),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price       DECIMAL(10,2) NOT NULL,
    discount_percent INTEGER NOT NULL DEFAULT 0,
    line_total       DECIMAL(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE support_tickets (
    ticket_id          INTEGER PRIMARY KEY,
    customer_id        INTEGER NOT NULL REFERENCES customers (customer_id),
    order_id           INTEGER REFERENCES orders (order_id),
    product_id         INTEGER REFERENCES products (product_id),
    assigned_to        INTEGER REFERENCES employees (employee_id),
    category           VARCHAR(30)  NOT NULL,
    priority           VARCHAR(10)  NOT NULL,
    status             VARCHAR(30)  NOT NULL,
    channel            VARCHAR(20)  NOT NULL,
    subject            VARCHAR(200) NOT NULL,
    description        TEXT NOT NULL,
    opened_at          DATETIME NOT NULL,
    closed_at          DATETIME,
    resolution         TEXT,
    satisfaction_score INTEGER CHECK (satisfaction_score BETWEEN 1 AND 5)
);
";

/// Created after the data is in: building an index once is cheaper than maintaining it.
const INDEXES: &str = "
CREATE INDEX idx_employees_manager_id ON employees (manager_id);
CREATE INDEX idx_employees_region_id ON employees (region_id);
CREATE INDEX idx_warehouses_region_id ON warehouses (region_id);
CREATE INDEX idx_warehouses_manager_id ON warehouses (manager_id);
CREATE INDEX idx_products_category_id ON products (category_id);
CREATE INDEX idx_products_supplier_id ON products (supplier_id);
CREATE INDEX idx_customers_region_id ON customers (region_id);
CREATE INDEX idx_customers_account_manager_id ON customers (account_manager_id);
CREATE INDEX idx_orders_customer_id ON orders (customer_id);
CREATE INDEX idx_orders_employee_id ON orders (employee_id);
CREATE INDEX idx_orders_warehouse_id ON orders (warehouse_id);
CREATE INDEX idx_orders_order_date ON orders (order_date);
CREATE INDEX idx_order_lines_product_id ON order_lines (product_id);
CREATE INDEX idx_support_tickets_customer_id ON support_tickets (customer_id);
CREATE INDEX idx_support_tickets_order_id ON support_tickets (order_id);
CREATE INDEX idx_support_tickets_product_id ON support_tickets (product_id);
CREATE INDEX idx_support_tickets_assigned_to ON support_tickets (assigned_to);
";

// ---------------------------------------------------------------------------------------------
// Randomness, dates and formatting
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and the same sequence on every platform and Rust version.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// Uniform index into a collection of `len` items.
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Index biased towards the start: the smaller of two draws.
    fn low_index(&mut self, len: usize) -> usize {
        self.index(len).min(self.index(len))
    }

    /// True with probability `p` percent.
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// Index chosen with the given relative weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut r = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        weights.len() - 1
    }

    /// Two distinct indexes (the same one twice only when `len` is 1).
    fn two_indexes(&mut self, len: usize) -> (usize, usize) {
        let a = self.index(len);
        if len < 2 {
            return (a, a);
        }
        let b = (a + 1 + self.index(len - 1)) % len;
        (a, b)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` for a day number.
fn date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
fn timestamp(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(DAY));
    let s = secs.rem_euclid(DAY);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / HOUR,
        s % HOUR / MINUTE,
        s % MINUTE
    )
}

/// A day drawn uniformly from `from..=to` (both day numbers).
fn day_between(rng: &mut Rng, from: i64, to: i64) -> i64 {
    rng.range(from, to)
}

/// Dollars with exactly two decimals from a non-negative number of cents.
fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Lower-case ASCII letters and digits of `s`, for e-mail local parts and domains.
fn slug(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `first.last@domain`, numbered (`first.last2@…`) when the plain form is taken.
fn unique_email(taken: &mut HashSet<String>, first: &str, last: &str, domain: &str) -> String {
    let base = format!("{}.{}", slug(first), slug(last));
    let mut n = 1;
    loop {
        let email = if n == 1 {
            format!("{base}@{domain}")
        } else {
            format!("{base}{n}@{domain}")
        };
        if !taken.contains(&email) {
            taken.insert(email.clone());
            return email;
        }
        n += 1;
    }
}

/// A phone number in international format; North American ones use the fictional 555 exchange.
fn phone(rng: &mut Rng, city: &City) -> String {
    if city.dial == "1" {
        format!("+1 {}-555-{:04}", rng.range(201, 989), rng.range(100, 9999))
    } else {
        format!(
            "+{} {} {} {:04}",
            city.dial,
            rng.range(10, 99),
            rng.range(100, 999),
            rng.range(0, 9999)
        )
    }
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}

// ---------------------------------------------------------------------------------------------
// Regions, cities, people
// ---------------------------------------------------------------------------------------------

/// (name, code) of each region; the region id is the position plus one.
const REGIONS: [(&str, &str); 6] = [
    ("North America", "NA"),
    ("Latin America", "LATAM"),
    ("Western Europe", "WEU"),
    ("Northern & Eastern Europe", "NEE"),
    ("Asia Pacific", "APAC"),
    ("Middle East & Africa", "MEA"),
];

/// How customers are spread over the regions, in the order of [`REGIONS`].
const REGION_WEIGHTS: [u32; 6] = [36, 10, 25, 8, 14, 7];

/// A place customers, suppliers and staff live.
struct City {
    name: &'static str,
    country: &'static str,
    /// Region id (1-based).
    region: i64,
    /// Country calling code, for phone numbers.
    dial: &'static str,
}

const fn city(name: &'static str, country: &'static str, region: i64, dial: &'static str) -> City {
    City {
        name,
        country,
        region,
        dial,
    }
}

const CITIES: &[City] = &[
    city("New York", "United States", 1, "1"),
    city("Chicago", "United States", 1, "1"),
    city("Los Angeles", "United States", 1, "1"),
    city("Seattle", "United States", 1, "1"),
    city("Austin", "United States", 1, "1"),
    city("Boston", "United States", 1, "1"),
    city("Denver", "United States", 1, "1"),
    city("Atlanta", "United States", 1, "1"),
    city("Portland", "United States", 1, "1"),
    city("Toronto", "Canada", 1, "1"),
    city("Vancouver", "Canada", 1, "1"),
    city("Montreal", "Canada", 1, "1"),
    city("Mexico City", "Mexico", 2, "52"),
    city("Guadalajara", "Mexico", 2, "52"),
    city("São Paulo", "Brazil", 2, "55"),
    city("Rio de Janeiro", "Brazil", 2, "55"),
    city("Buenos Aires", "Argentina", 2, "54"),
    city("Santiago", "Chile", 2, "56"),
    city("Bogotá", "Colombia", 2, "57"),
    city("Lima", "Peru", 2, "51"),
    city("London", "United Kingdom", 3, "44"),
    city("Manchester", "United Kingdom", 3, "44"),
    city("Paris", "France", 3, "33"),
    city("Lyon", "France", 3, "33"),
    city("Berlin", "Germany", 3, "49"),
    city("Munich", "Germany", 3, "49"),
    city("Hamburg", "Germany", 3, "49"),
    city("Amsterdam", "Netherlands", 3, "31"),
    city("Madrid", "Spain", 3, "34"),
    city("Barcelona", "Spain", 3, "34"),
    city("Milan", "Italy", 3, "39"),
    city("Dublin", "Ireland", 3, "353"),
    city("Brussels", "Belgium", 3, "32"),
    city("Zürich", "Switzerland", 3, "41"),
    city("Vienna", "Austria", 3, "43"),
    city("Stockholm", "Sweden", 4, "46"),
    city("Oslo", "Norway", 4, "47"),
    city("Copenhagen", "Denmark", 4, "45"),
    city("Helsinki", "Finland", 4, "358"),
    city("Warsaw", "Poland", 4, "48"),
    city("Kraków", "Poland", 4, "48"),
    city("Prague", "Czech Republic", 4, "420"),
    city("Tallinn", "Estonia", 4, "372"),
    city("Tokyo", "Japan", 5, "81"),
    city("Osaka", "Japan", 5, "81"),
    city("Seoul", "South Korea", 5, "82"),
    city("Singapore", "Singapore", 5, "65"),
    city("Sydney", "Australia", 5, "61"),
    city("Melbourne", "Australia", 5, "61"),
    city("Auckland", "New Zealand", 5, "64"),
    city("Mumbai", "India", 5, "91"),
    city("Bengaluru", "India", 5, "91"),
    city("Manila", "Philippines", 5, "63"),
    city("Dubai", "United Arab Emirates", 6, "971"),
    city("Tel Aviv", "Israel", 6, "972"),
    city("Istanbul", "Turkey", 6, "90"),
    city("Johannesburg", "South Africa", 6, "27"),
    city("Cape Town", "South Africa", 6, "27"),
    city("Nairobi", "Kenya", 6, "254"),
    city("Lagos", "Nigeria", 6, "234"),
    city("Casablanca", "Morocco", 6, "212"),
];

/// A city of the given region, favouring the first ones listed (the bigger markets).
fn city_in(rng: &mut Rng, region: i64) -> &'static City {
    let start = CITIES.iter().position(|c| c.region == region).unwrap_or(0);
    let len = CITIES[start..]
        .iter()
        .take_while(|c| c.region == region)
        .count()
        .max(1);
    &CITIES[start + rng.low_index(len)]
}

/// A region id drawn with [`REGION_WEIGHTS`].
fn random_region(rng: &mut Rng) -> i64 {
    rng.weighted(&REGION_WEIGHTS) as i64 + 1
}

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Olivia",
    "Liam",
    "Noah",
    "Emma",
    "Ava",
    "Sophia",
    "Lucas",
    "Mia",
    "Ethan",
    "Amelia",
    "Mateo",
    "Isabella",
    "Hiroshi",
    "Yuki",
    "Aiko",
    "Kenji",
    "Wei",
    "Mei",
    "Jun",
    "Priya",
    "Arjun",
    "Ananya",
    "Rohan",
    "Fatima",
    "Omar",
    "Layla",
    "Yusuf",
    "Amara",
    "Kwame",
    "Chidi",
    "Zanele",
    "Thabo",
    "Sofia",
    "Diego",
    "Camila",
    "Valentina",
    "Santiago",
    "Lucia",
    "Pierre",
    "Claire",
    "Hugo",
    "Lena",
    "Jonas",
    "Greta",
    "Felix",
    "Ingrid",
    "Lars",
    "Freya",
    "Anna",
    "Piotr",
    "Katarzyna",
    "Tomas",
    "Eva",
    "Daniel",
    "Sarah",
    "Michael",
    "Laura",
    "David",
    "Rachel",
    "Benjamin",
    "Chloe",
    "Samuel",
    "Grace",
    "Oliver",
    "Hannah",
    "Gabriel",
    "Nora",
    "Aaron",
    "Maya",
    "Elijah",
    "Zoe",
    "Isaac",
    "Leah",
    "Tariq",
    "Nadia",
    "Min-jun",
    "Seo-yeon",
    "Patrick",
    "Siobhan",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Kim",
    "Park",
    "Chen",
    "Wang",
    "Li",
    "Zhang",
    "Patel",
    "Sharma",
    "Singh",
    "Gupta",
    "Khan",
    "Haddad",
    "Okafor",
    "Mensah",
    "Dlamini",
    "Ndlovu",
    "Silva",
    "Santos",
    "Oliveira",
    "Fernandez",
    "Rossi",
    "Bianchi",
    "Dubois",
    "Moreau",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Jansen",
    "de Vries",
    "Andersson",
    "Johansson",
    "Nielsen",
    "Hansen",
    "Virtanen",
    "Kowalski",
    "Nowak",
    "Novak",
    "Horvat",
    "O'Brien",
    "Murphy",
    "Kelly",
    "Walsh",
    "MacLeod",
    "Campbell",
    "Yilmaz",
    "Cohen",
];

fn person(rng: &mut Rng) -> (&'static str, &'static str) {
    (*rng.pick(FIRST_NAMES), *rng.pick(LAST_NAMES))
}

fn insert_regions(tx: &Transaction) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare("INSERT INTO regions (region_id, name, code) VALUES (?1, ?2, ?3)")?;
    for (i, (name, code)) in REGIONS.iter().enumerate() {
        stmt.execute(params![i as i64 + 1, name, code])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Employees
// ---------------------------------------------------------------------------------------------

/// What later tables need to know about a member of staff.
struct Employee {
    id: i64,
    role: Role,
    region: i64,
    /// Day of leaving; staff are never assigned work after it.
    terminated: Option<i64>,
}

impl Employee {
    fn active_on(&self, day: i64) -> bool {
        self.terminated.is_none_or(|t| day < t)
    }
}

/// The kinds of staff other tables refer to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Leader,
    SalesRep,
    SupportAgent,
    Other,
}

/// One line of the org chart before names are drawn.
struct Position {
    title: &'static str,
    department: &'static str,
    manager: Option<i64>,
    region: i64,
    role: Role,
    /// Salary band in thousands of dollars.
    salary_k: (i64, i64),
    /// Hire-date window, in years.
    hired: (i64, i64),
}

/// The org chart, top-down, so every manager has a smaller id than their reports.
fn org_chart(rng: &mut Rng) -> Vec<Position> {
    let lead = |title, department, manager, region, salary_k, hired| Position {
        title,
        department,
        manager: Some(manager),
        region,
        role: Role::Leader,
        salary_k,
        hired,
    };
    let mut chart = vec![Position {
        title: "Chief Executive Officer",
        department: "Executive",
        manager: None,
        region: 1,
        role: Role::Leader,
        salary_k: (310, 310),
        hired: (2009, 2009),
    }];
    // Ids 2..=6: the executive team.
    for (title, dept) in [
        ("VP of Sales", "Sales"),
        ("VP of Customer Support", "Customer Support"),
        ("VP of Operations", "Operations"),
        ("Chief Financial Officer", "Finance"),
        ("VP of Marketing", "Marketing"),
    ] {
        chart.push(lead(title, dept, 1, 1, (185, 245), (2010, 2014)));
    }
    // Ids 7..=12: one sales manager per region.
    for region in 1..=6 {
        chart.push(lead(
            "Regional Sales Manager",
            "Sales",
            2,
            region,
            (110, 150),
            (2012, 2018),
        ));
    }
    // Ids 13..=16: support team leads.
    for region in [1, 3, 5, 1] {
        chart.push(lead(
            "Support Team Lead",
            "Customer Support",
            3,
            region,
            (78, 98),
            (2012, 2018),
        ));
    }
    // Ids 17..=28: one manager per warehouse (warehouse w is in region (w + 1) / 2).
    for w in 1..=12 {
        chart.push(lead(
            "Warehouse Manager",
            "Operations",
            4,
            (w + 1) / 2,
            (82, 115),
            (2012, 2019),
        ));
    }
    // Ids 29..=31.
    chart.push(lead(
        "Controller",
        "Finance",
        5,
        1,
        (120, 150),
        (2012, 2017),
    ));
    chart.push(lead(
        "Accounting Manager",
        "Finance",
        5,
        1,
        (95, 120),
        (2013, 2019),
    ));
    chart.push(lead(
        "Marketing Manager",
        "Marketing",
        6,
        1,
        (95, 125),
        (2013, 2019),
    ));

    let staff = |title, department, manager, region, role, salary_k| Position {
        title,
        department,
        manager: Some(manager),
        region,
        role,
        salary_k,
        hired: (2014, 2021),
    };
    // Sales reps, a fixed number per region so every region has account managers.
    for (region, count) in [(1, 18), (2, 6), (3, 15), (4, 5), (5, 10), (6, 6)] {
        for _ in 0..count {
            let (title, band) = *rng.pick(&[
                ("Account Executive", (62, 88)),
                ("Senior Account Executive", (80, 110)),
                ("Sales Representative", (50, 70)),
            ]);
            chart.push(staff(
                title,
                "Sales",
                6 + region,
                region,
                Role::SalesRep,
                band,
            ));
        }
    }
    for i in 0..36 {
        let lead_id = 13 + i % 4;
        let region = [1, 3, 5, 1][i as usize % 4];
        let (title, band) = *rng.pick(&[
            ("Support Specialist", (45, 60)),
            ("Support Specialist", (45, 60)),
            ("Senior Support Specialist", (58, 74)),
        ]);
        chart.push(staff(
            title,
            "Customer Support",
            lead_id,
            region,
            Role::SupportAgent,
            band,
        ));
    }
    for i in 0..10 {
        let w = 1 + (i * 5) % 12;
        chart.push(staff(
            "Logistics Coordinator",
            "Operations",
            16 + w,
            (w + 1) / 2,
            Role::Other,
            (48, 66),
        ));
    }
    for (title, manager, band) in [
        ("Financial Analyst", 29, (70, 95)),
        ("Financial Analyst", 29, (70, 95)),
        ("Senior Accountant", 30, (72, 92)),
        ("Accountant", 30, (58, 78)),
        ("Accountant", 30, (58, 78)),
        ("Accounts Receivable Specialist", 30, (48, 62)),
        ("Accounts Receivable Specialist", 30, (48, 62)),
        ("Payroll Specialist", 30, (50, 64)),
    ] {
        chart.push(staff(title, "Finance", manager, 1, Role::Other, band));
    }
    for (title, band) in [
        ("Marketing Specialist", (55, 72)),
        ("Content Strategist", (58, 76)),
        ("Growth Analyst", (65, 88)),
        ("Brand Designer", (60, 80)),
        ("Marketing Specialist", (55, 72)),
    ] {
        chart.push(staff(
            title,
            "Marketing",
            31,
            random_region(rng).min(3),
            Role::Other,
            band,
        ));
    }
    chart
}

const BIO_EXTRAS: &[&str] = &[
    "Previously spent eight years in retail logistics.",
    "Speaks Spanish and Portuguese.",
    "Known for a calm approach to difficult escalations.",
    "Runs the internal mentoring program for new hires.",
    "Holds a CPA certification.",
    "Coaches the company's five-a-side football team.",
    "Moved over from the warehouse floor after three years as a picker.",
    "Led the migration to the new order management system.",
    "Has a background in industrial design.",
    "Regularly volunteers at a local food bank.",
    "Fluent in French, German and English.",
    "Won the President's Club award twice.",
    "Champion of the customer feedback program.",
    "Wrote most of the returns policy in its current form.",
    "Previously worked as a barista and still roasts coffee at home.",
];

fn insert_employees(
    tx: &Transaction,
    emails: &mut HashSet<String>,
) -> rusqlite::Result<Vec<Employee>> {
    let mut rng = Rng::new(0xE3B0_C442_98FC_1C14);
    let chart = org_chart(&mut rng);
    let mut stmt = tx.prepare(
        "INSERT INTO employees (employee_id, first_name, last_name, email, phone, job_title, \
         department, manager_id, region_id, hire_date, termination_date, salary, is_active, bio) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let mut employees = Vec::with_capacity(chart.len());
    for (i, p) in chart.iter().enumerate() {
        let id = i as i64 + 1;
        let (first, last) = person(&mut rng);
        let email = unique_email(emails, first, last, COMPANY_DOMAIN);
        let home = city_in(&mut rng, p.region);
        let phone_no = if rng.percent(95) {
            Some(phone(&mut rng, home))
        } else {
            None
        };
        let hire_day = day_between(
            &mut rng,
            days_from_civil(p.hired.0, 1, 5),
            days_from_civil(p.hired.1, 12, 15),
        );
        let terminated = if p.role != Role::Leader && rng.percent(8) {
            Some(day_between(
                &mut rng,
                days_from_civil(2023, 1, 15),
                days_from_civil(2025, 5, 30),
            ))
        } else {
            None
        };
        let salary = rng.range(p.salary_k.0 * 2, p.salary_k.1 * 2) * 500 * 100;
        let bio = if rng.percent(88) {
            let (y, _, _) = civil_from_days(hire_day);
            let mut bio = format!(
                "{first} joined {COMPANY} in {y} as {} {}.",
                article(p.title),
                p.title
            );
            let (a, b) = rng.two_indexes(BIO_EXTRAS.len());
            bio.push(' ');
            bio.push_str(BIO_EXTRAS[a]);
            if rng.percent(50) {
                bio.push(' ');
                bio.push_str(BIO_EXTRAS[b]);
            }
            Some(bio)
        } else {
            None
        };
        stmt.execute(params![
            id,
            first,
            last,
            email,
            phone_no,
            p.title,
            p.department,
            p.manager,
            p.region,
            date(hire_day),
            terminated.map(date),
            money(salary),
            terminated.is_none(),
            bio,
        ])?;
        employees.push(Employee {
            id,
            role: p.role,
            region: p.region,
            terminated,
        });
    }
    Ok(employees)
}

/// A sales rep of `region` employed on `day`, or failing that any rep employed on `day`.
fn sales_rep(rng: &mut Rng, employees: &[Employee], region: i64, day: i64) -> Option<i64> {
    let local: Vec<&Employee> = employees
        .iter()
        .filter(|e| e.role == Role::SalesRep && e.region == region && e.active_on(day))
        .collect();
    if !local.is_empty() {
        return Some(rng.pick(&local).id);
    }
    let any: Vec<&Employee> = employees
        .iter()
        .filter(|e| e.role == Role::SalesRep && e.active_on(day))
        .collect();
    (!any.is_empty()).then(|| rng.pick(&any).id)
}

// ---------------------------------------------------------------------------------------------
// Warehouses, categories, suppliers, products
// ---------------------------------------------------------------------------------------------

/// A distribution centre; its id is its position in [`WAREHOUSES`] plus one.
struct Warehouse {
    name: &'static str,
    city: &'static str,
    country: &'static str,
    /// Opening date as (year, month, day).
    opened: (i64, i64, i64),
}

const fn warehouse(
    name: &'static str,
    city: &'static str,
    country: &'static str,
    opened: (i64, i64, i64),
) -> Warehouse {
    Warehouse {
        name,
        city,
        country,
        opened,
    }
}

/// Two per region, in region order: warehouse w is in region (w + 1) / 2 and is run by
/// employee 16 + w (see [`org_chart`]).
const WAREHOUSES: [Warehouse; 12] = [
    warehouse(
        "Columbus Fulfillment Center",
        "Columbus",
        "United States",
        (2010, 4, 12),
    ),
    warehouse(
        "Reno Distribution Center",
        "Reno",
        "United States",
        (2015, 9, 1),
    ),
    warehouse(
        "Monterrey Distribution Center",
        "Monterrey",
        "Mexico",
        (2016, 3, 7),
    ),
    warehouse(
        "Campinas Fulfillment Center",
        "Campinas",
        "Brazil",
        (2019, 6, 17),
    ),
    warehouse("Rotterdam Hub", "Rotterdam", "Netherlands", (2011, 2, 21)),
    warehouse(
        "Leipzig Distribution Center",
        "Leipzig",
        "Germany",
        (2017, 10, 2),
    ),
    warehouse("Gothenburg Hub", "Gothenburg", "Sweden", (2014, 5, 5)),
    warehouse(
        "Poznań Fulfillment Center",
        "Poznań",
        "Poland",
        (2020, 8, 24),
    ),
    warehouse("Singapore Hub", "Singapore", "Singapore", (2013, 11, 11)),
    warehouse(
        "Melbourne Distribution Center",
        "Melbourne",
        "Australia",
        (2018, 1, 29),
    ),
    warehouse(
        "Jebel Ali Hub",
        "Dubai",
        "United Arab Emirates",
        (2016, 7, 4),
    ),
    warehouse(
        "Johannesburg Distribution Center",
        "Johannesburg",
        "South Africa",
        (2019, 3, 18),
    ),
];

fn insert_warehouses(tx: &Transaction) -> rusqlite::Result<()> {
    let mut rng = Rng::new(0x5A17_0C0F_FEE0_0001);
    let mut stmt = tx.prepare(
        "INSERT INTO warehouses (warehouse_id, region_id, manager_id, name, city, country, \
         capacity_pallets, opened_on) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (i, wh) in WAREHOUSES.iter().enumerate() {
        let (y, m, d) = wh.opened;
        let w = i as i64 + 1;
        let capacity = rng.range(8, 60) * 500;
        stmt.execute(params![
            w,
            (w + 1) / 2,
            16 + w,
            wh.name,
            wh.city,
            wh.country,
            capacity,
            date(days_from_civil(y, m, d))
        ])?;
    }
    Ok(())
}

/// A product category with the pools its products are named from.
struct Category {
    name: &'static str,
    code: &'static str,
    description: &'static str,
    nouns: &'static [&'static str],
    /// List-price band in cents.
    price: (i64, i64),
    /// Shipping-weight band in grams.
    grams: (i64, i64),
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "Beverages",
        code: "BEV",
        description: "Coffee, tea, juices and sparkling drinks, sold by the case or the bag.",
        nouns: &[
            "Cold Brew Coffee",
            "Green Tea",
            "Sparkling Water",
            "Espresso Beans",
            "Herbal Infusion",
            "Oat Milk",
            "Lemonade Concentrate",
            "Chai Blend",
        ],
        price: (299, 3499),
        grams: (250, 9000),
    },
    Category {
        name: "Pantry Staples",
        code: "PAN",
        description: "Oils, grains, sauces and other shelf-stable cooking basics.",
        nouns: &[
            "Olive Oil",
            "Basmati Rice",
            "Penne Pasta",
            "Tomato Sauce",
            "Wildflower Honey",
            "Maple Syrup",
            "Sea Salt",
            "Spice Rub",
        ],
        price: (199, 2999),
        grams: (200, 5000),
    },
    Category {
        name: "Snacks",
        code: "SNK",
        description: "Sweet and savoury snacks for the office, the trail or the sofa.",
        nouns: &[
            "Trail Mix",
            "Dark Chocolate Bar",
            "Granola Bites",
            "Rice Crackers",
            "Dried Mango",
            "Protein Bar",
            "Kettle Chips",
            "Almond Butter Cups",
        ],
        price: (149, 2499),
        grams: (50, 2500),
    },
    Category {
        name: "Kitchenware",
        code: "KIT",
        description: "Cookware, knives and tools for home and professional kitchens.",
        nouns: &[
            "Chef's Knife",
            "Cast Iron Skillet",
            "Cutting Board",
            "Mixing Bowl Set",
            "French Press",
            "Saucepan",
            "Measuring Cups",
            "Salad Spinner",
        ],
        price: (899, 18999),
        grams: (150, 4500),
    },
    Category {
        name: "Office Supplies",
        code: "OFF",
        description: "Paper, pens, organisers and the small machines every office needs.",
        nouns: &[
            "Notebook",
            "Gel Pen Set",
            "Desk Organizer",
            "Stapler",
            "Sticky Notes",
            "Whiteboard Markers",
            "Paper Shredder",
            "Filing Box",
        ],
        price: (249, 14999),
        grams: (40, 9000),
    },
    Category {
        name: "Electronics Accessories",
        code: "ELE",
        description: "Cables, chargers, audio and desk gadgets for phones and laptops.",
        nouns: &[
            "USB-C Cable",
            "Wireless Charger",
            "Bluetooth Speaker",
            "Noise-Cancelling Headphones",
            "Laptop Stand",
            "Power Bank",
            "HDMI Adapter",
            "Webcam",
        ],
        price: (999, 29999),
        grams: (30, 2500),
    },
    Category {
        name: "Outdoor Gear",
        code: "OUT",
        description: "Equipment for hiking, camping and rainy commutes.",
        nouns: &[
            "Hiking Backpack",
            "Camping Lantern",
            "Insulated Bottle",
            "Trekking Poles",
            "Sleeping Bag",
            "Rain Jacket",
            "Camp Stove",
            "Hammock",
        ],
        price: (1499, 34999),
        grams: (200, 4000),
    },
    Category {
        name: "Cleaning Supplies",
        code: "CLN",
        description: "Detergents, cloths and refills for homes, offices and kitchens.",
        nouns: &[
            "All-Purpose Cleaner",
            "Microfiber Cloths",
            "Dish Soap",
            "Laundry Pods",
            "Glass Cleaner",
            "Scrub Brush",
            "Trash Bags",
            "Mop Refill",
        ],
        price: (199, 4999),
        grams: (100, 6000),
    },
    Category {
        name: "Personal Care",
        code: "PER",
        description: "Everyday toiletries and skin care.",
        nouns: &[
            "Shampoo",
            "Hand Cream",
            "Sunscreen",
            "Bamboo Toothbrush",
            "Body Wash",
            "Lip Balm",
            "Face Serum",
            "Shaving Kit",
        ],
        price: (299, 5999),
        grams: (20, 1200),
    },
    Category {
        name: "Home & Furniture",
        code: "HOM",
        description: "Furniture, lighting and textiles for homes and small offices.",
        nouns: &[
            "Desk Chair",
            "Bookshelf",
            "Floor Lamp",
            "Throw Blanket",
            "Side Table",
            "Wall Clock",
            "Storage Ottoman",
            "Area Rug",
        ],
        price: (1999, 59999),
        grams: (500, 30000),
    },
    Category {
        name: "Toys & Games",
        code: "TOY",
        description: "Puzzles, board games and toys for all ages.",
        nouns: &[
            "Jigsaw Puzzle",
            "Building Blocks",
            "Board Game",
            "Plush Bear",
            "Card Game",
            "Kite",
            "Science Kit",
            "Wooden Train Set",
        ],
        price: (599, 12999),
        grams: (100, 3500),
    },
    Category {
        name: "Garden",
        code: "GAR",
        description: "Tools, planters and supplies for gardens and balconies.",
        nouns: &[
            "Pruning Shears",
            "Watering Can",
            "Seed Starter Kit",
            "Garden Hose",
            "Planter Box",
            "Compost Bin",
            "Garden Gloves",
            "Bird Feeder",
        ],
        price: (399, 19999),
        grams: (100, 15000),
    },
];

const PRODUCT_ADJECTIVES: &[&str] = &[
    "Classic",
    "Premium",
    "Everyday",
    "Deluxe",
    "Compact",
    "Eco",
    "Pro",
    "Essential",
    "Ultra",
    "Heritage",
    "Urban",
    "Alpine",
    "Coastal",
    "Signature",
    "Nordic",
    "Studio",
    "Family",
    "Select",
];

const PRODUCT_VARIANTS: &[&str] = &[
    "Small",
    "Large",
    "Twin Pack",
    "6-Pack",
    "12-Pack",
    "Refill",
    "Travel Size",
    "XL",
    "Blue",
    "Charcoal",
    "Sand",
    "Forest Green",
];

fn insert_categories(tx: &Transaction) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare("INSERT INTO categories (category_id, name, description) VALUES (?1, ?2, ?3)")?;
    for (i, c) in CATEGORIES.iter().enumerate() {
        stmt.execute(params![i as i64 + 1, c.name, c.description])?;
    }
    Ok(())
}

const SUPPLIER_PREFIXES: &[&str] = &[
    "Blue Harbor",
    "Summit",
    "Evergreen",
    "Northstar",
    "Red Oak",
    "Silver Birch",
    "Golden Field",
    "Iron Bridge",
    "Clearwater",
    "Maple Leaf",
    "Sunrise",
    "Granite Peak",
    "Cedar Grove",
    "Lighthouse",
    "Windmill",
    "Copper Kettle",
    "Riverbend",
    "Highland",
    "Bright Path",
    "Open Sky",
];

const SUPPLIER_SUFFIXES: &[&str] = &[
    "Trading",
    "Supply Co.",
    "Imports",
    "Goods",
    "Manufacturing",
    "Wholesale",
    "Provisions",
    "Industries",
];

/// Inserts the suppliers; returns, per category index, the ids of suppliers that stock it.
fn insert_suppliers(tx: &Transaction) -> rusqlite::Result<Vec<Vec<i64>>> {
    let mut rng = Rng::new(0x0005_0FF1_1E25_2025);
    let mut stmt = tx.prepare(
        "INSERT INTO suppliers (supplier_id, company_name, contact_name, email, phone, city, \
         country, payment_terms_days, is_preferred) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut names = HashSet::new();
    let mut by_category = vec![Vec::new(); CATEGORIES.len()];
    for i in 0..SUPPLIER_COUNT {
        let id = i as i64 + 1;
        let (prefix, name) = loop {
            let prefix = *rng.pick(SUPPLIER_PREFIXES);
            let name = format!("{prefix} {}", rng.pick(SUPPLIER_SUFFIXES));
            if names.insert(name.clone()) {
                break (prefix, name);
            }
        };
        let (first, last) = person(&mut rng);
        let email = format!("{}.{}@{}.example", slug(first), slug(last), slug(prefix));
        let region = random_region(&mut rng);
        let home = city_in(&mut rng, region);
        let phone_no = if rng.percent(90) {
            Some(phone(&mut rng, home))
        } else {
            None
        };
        stmt.execute(params![
            id,
            name,
            format!("{first} {last}"),
            email,
            phone_no,
            home.name,
            home.country,
            *rng.pick(&[30, 30, 45, 60]),
            rng.percent(30),
        ])?;
        // Each category gets its suppliers from two interleaved passes over the list.
        by_category[i % CATEGORIES.len()].push(id);
        by_category[(i * 5 + 3) % CATEGORIES.len()].push(id);
    }
    Ok(by_category)
}

/// What orders and tickets need to know about a product.
struct Product {
    name: String,
    price_cents: i64,
    discontinued: bool,
}

/// A valid 4×4 RGB PNG, a two-colour checkerboard: a realistic little BLOB.
fn thumbnail_png(a: [u8; 3], b: [u8; 3]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::with_capacity(4 * 13);
    for y in 0..4 {
        raw.push(0); // filter: none
        for x in 0..4 {
            raw.extend_from_slice(if (x + y) % 2 == 0 { &a } else { &b });
        }
    }
    // zlib stream with one stored (uncompressed) deflate block.
    let mut zlib = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&raw);
    let (mut s1, mut s2) = (1u32, 0u32);
    for &byte in &raw {
        s1 = (s1 + u32::from(byte)) % 65_521;
        s2 = (s2 + s1) % 65_521;
    }
    zlib.extend_from_slice(&((s2 << 16) | s1).to_be_bytes());

    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&4u32.to_be_bytes());
    ihdr.extend_from_slice(&4u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn insert_products(tx: &Transaction, suppliers: &[Vec<i64>]) -> rusqlite::Result<Vec<Product>> {
    let mut rng = Rng::new(0x0BAD_CAFE_D00D_0042);
    let mut stmt = tx.prepare(
        "INSERT INTO products (product_id, sku, name, category_id, supplier_id, unit_price, \
         unit_cost, units_in_stock, reorder_level, weight_kg, is_discontinued, thumbnail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut names = HashSet::new();
    let mut products = Vec::with_capacity(PRODUCT_COUNT);
    for i in 0..PRODUCT_COUNT {
        let id = i as i64 + 1;
        let c = rng.index(CATEGORIES.len());
        let cat = &CATEGORIES[c];
        let mut name = format!("{} {}", rng.pick(PRODUCT_ADJECTIVES), rng.pick(cat.nouns));
        while names.contains(&name) {
            name = format!(
                "{} {} ({})",
                rng.pick(PRODUCT_ADJECTIVES),
                rng.pick(cat.nouns),
                rng.pick(PRODUCT_VARIANTS)
            );
        }
        names.insert(name.clone());
        // Prices end in .99, .49 or .00, as shelf prices do.
        let dollars = rng.range(cat.price.0, cat.price.1) / 100;
        let price_cents = dollars * 100 + *rng.pick(&[99, 99, 99, 49, 0]);
        let cost_cents = price_cents * rng.range(38, 72) / 100;
        let discontinued = rng.percent(6);
        let stock = if discontinued || rng.percent(4) {
            0
        } else {
            rng.range(1, 2_400)
        };
        let grams = rng.range(cat.grams.0, cat.grams.1);
        let thumbnail = if rng.percent(8) {
            let color = |r: &mut Rng| [r.below(256) as u8, r.below(256) as u8, r.below(256) as u8];
            Some(thumbnail_png(color(&mut rng), color(&mut rng)))
        } else {
            None
        };
        let supplier = *rng.pick(&suppliers[c]);
        stmt.execute(params![
            id,
            format!("{}-{:05}", cat.code, id),
            name,
            c as i64 + 1,
            supplier,
            money(price_cents),
            money(cost_cents),
            stock,
            rng.range(2, 10) * 5,
            grams as f64 / 1000.0,
            discontinued,
            thumbnail,
        ])?;
        products.push(Product {
            name,
            price_cents,
            discontinued,
        });
    }
    Ok(products)
}

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Segment {
    Consumer,
    SmallBusiness,
    Enterprise,
}

impl Segment {
    fn name(self) -> &'static str {
        match self {
            Segment::Consumer => "Consumer",
            Segment::SmallBusiness => "Small Business",
            Segment::Enterprise => "Enterprise",
        }
    }
}

/// What orders and tickets need to know about a customer.
struct Customer {
    id: i64,
    first: &'static str,
    last: &'static str,
    segment: Segment,
    city: &'static City,
    account_manager: Option<i64>,
    signup_day: i64,
}

const CONSUMER_DOMAINS: &[&str] = &[
    "example.com",
    "example.net",
    "example.org",
    "mail.example",
    "inbox.example",
    "post.example",
];

const BUSINESS_NAMES: &[&str] = &[
    "Apex",
    "Bluebird",
    "Brightwater",
    "Cobalt",
    "Crescent",
    "Driftwood",
    "Fairview",
    "Foxglove",
    "Greenway",
    "Harbor View",
    "Juniper",
    "Keystone",
    "Lakeside",
    "Meridian",
    "Northgate",
    "Oakridge",
    "Pinecrest",
    "Redwood",
    "Riverstone",
    "Seaside",
    "Stonebridge",
    "Sunflower",
    "Thistle",
    "Westfield",
    "Willow Creek",
];

const SMALL_BUSINESS_KINDS: &[&str] = &[
    "Cafe",
    "Dental",
    "Design Studio",
    "Architects",
    "Bakery",
    "Consulting",
    "Fitness",
    "Law Group",
    "Veterinary Clinic",
    "Guesthouse",
    "Academy",
    "Media",
    "Outfitters",
    "Pharmacy",
    "Realty",
    "Florist",
    "Print Shop",
    "Engineering",
    "Yoga Studio",
    "Bistro",
];

const ENTERPRISE_KINDS: &[&str] = &[
    "Holdings",
    "Industries",
    "Hospitality Group",
    "Healthcare",
    "Manufacturing",
    "Retail Group",
    "University",
    "Logistics Group",
    "Hotels & Resorts",
    "Foods",
];

const CUSTOMER_NOTES: &[&str] = &[
    "Prefers delivery before noon.",
    "Requested paper invoices by mail instead of e-mail.",
    "Asked not to be contacted by phone.",
    "Long-time customer; referred several colleagues.",
    "Had a billing dispute in 2023, resolved amicably.",
    "Tax-exempt organisation; certificate on file.",
    "Deliveries go to a loading dock; driver must call ahead.",
    "Interested in bulk pricing for office supplies.",
    "Sensitive to shipping delays; offer Express when stock allows.",
    "Pays invoices early; eligible for the early-payment discount.",
    "Uses a purchase order number on every order.",
    "Complained about damaged packaging twice; pack fragile items with extra padding.",
    "Signed up through the spring trade show.",
    "Prefers to be contacted in Spanish.",
];

fn insert_customers(
    tx: &Transaction,
    employees: &[Employee],
    emails: &mut HashSet<String>,
) -> rusqlite::Result<Vec<Customer>> {
    let mut rng = Rng::new(0xC057_0E25_1234_5678);
    // Ids follow signup order, so signup days are drawn first and sorted.
    let first_signup = days_from_civil(2019, 1, 7);
    let last_signup = days_from_civil(2025, 6, 20);
    let mut signups: Vec<i64> = (0..CUSTOMER_COUNT)
        .map(|_| day_between(&mut rng, first_signup, last_signup))
        .collect();
    signups.sort_unstable();
    let mut stmt = tx.prepare(
        "INSERT INTO customers (customer_id, first_name, last_name, company_name, segment, email, \
         phone, city, country, region_id, account_manager_id, signup_date, is_vip, \
         marketing_opt_in, credit_limit, notes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut customers = Vec::with_capacity(CUSTOMER_COUNT);
    for (i, &signup_day) in signups.iter().enumerate() {
        let id = i as i64 + 1;
        let (first, last) = person(&mut rng);
        let segment = match rng.weighted(&[70, 22, 8]) {
            0 => Segment::Consumer,
            1 => Segment::SmallBusiness,
            _ => Segment::Enterprise,
        };
        let company = match segment {
            Segment::Consumer => None,
            Segment::SmallBusiness => {
                let base = if rng.percent(35) {
                    last
                } else {
                    *rng.pick(BUSINESS_NAMES)
                };
                Some(format!("{base} {}", rng.pick(SMALL_BUSINESS_KINDS)))
            }
            Segment::Enterprise => {
                let base = *rng.pick(BUSINESS_NAMES);
                let suffix = *rng.pick(&["Inc.", "Ltd.", "GmbH", "S.A.", "plc", "LLC"]);
                Some(format!("{base} {} {suffix}", rng.pick(ENTERPRISE_KINDS)))
            }
        };
        let domain = match &company {
            Some(name) => {
                let mut words = name.split(' ');
                let a = words.next().unwrap_or("company");
                let b = words.next().unwrap_or("");
                format!("{}{}.example", slug(a), slug(b))
            }
            None => (*rng.pick(CONSUMER_DOMAINS)).to_string(),
        };
        let email = unique_email(emails, first, last, &domain);
        let region = random_region(&mut rng);
        let home = city_in(&mut rng, region);
        let phone_no = if rng.percent(90) {
            Some(phone(&mut rng, home))
        } else {
            None
        };
        let account_manager = match segment {
            Segment::Enterprise => sales_rep(&mut rng, employees, region, AS_OF / DAY),
            Segment::SmallBusiness if rng.percent(60) => {
                sales_rep(&mut rng, employees, region, AS_OF / DAY)
            }
            _ => None,
        };
        let is_vip = rng.percent(match segment {
            Segment::Consumer => 3,
            Segment::SmallBusiness => 8,
            Segment::Enterprise => 30,
        });
        let credit_limit = match segment {
            Segment::Consumer => None,
            Segment::SmallBusiness => Some(rng.range(2, 20) * 50_000),
            Segment::Enterprise => Some(rng.range(5, 50) * 500_000),
        };
        let notes = if rng.percent(22) {
            let (a, b) = rng.two_indexes(CUSTOMER_NOTES.len());
            Some(if rng.percent(30) {
                format!("{} {}", CUSTOMER_NOTES[a], CUSTOMER_NOTES[b])
            } else {
                CUSTOMER_NOTES[a].to_string()
            })
        } else {
            None
        };
        stmt.execute(params![
            id,
            first,
            last,
            company,
            segment.name(),
            email,
            phone_no,
            home.name,
            home.country,
            region,
            account_manager,
            date(signup_day),
            is_vip,
            rng.percent(55),
            credit_limit.map(money),
            notes,
        ])?;
        customers.push(Customer {
            id,
            first,
            last,
            segment,
            city: home,
            account_manager,
            signup_day,
        });
    }
    Ok(customers)
}

// ---------------------------------------------------------------------------------------------
// Orders and order lines
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
    Returned,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::Returned => "returned",
        }
    }
}

/// What support tickets need to know about an order.
struct Order {
    id: i64,
    /// Index into the customer list.
    customer: usize,
    placed: i64,
    status: Status,
    shipped: Option<i64>,
    delivered: Option<i64>,
    method: &'static str,
    warehouse: usize,
    total_cents: i64,
    shipping_cents: i64,
    /// (product index, line total in cents) per line.
    lines: Vec<(usize, i64)>,
}

/// Order timestamps, sorted: volume grows over time and peaks in November and December.
fn order_times(rng: &mut Rng) -> Vec<i64> {
    let start = FIRST_ORDER_DAY * DAY;
    let span = (AS_OF - start) as u64;
    let hour_weights: [u32; 24] = [
        1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 11, 11, 10, 10, 10, 9, 9, 8, 8, 9, 9, 7, 4, 2,
    ];
    let mut times = Vec::with_capacity(ORDER_COUNT);
    while times.len() < ORDER_COUNT {
        let offset = if rng.percent(50) {
            rng.below(span)
        } else {
            rng.below(span).max(rng.below(span))
        };
        let day = (start + offset as i64) / DAY;
        let (_, month, _) = civil_from_days(day);
        if month < 11 && rng.percent(25) {
            continue;
        }
        let secs =
            day * DAY + rng.weighted(&hour_weights) as i64 * HOUR + rng.below(HOUR as u64) as i64;
        if secs <= AS_OF {
            times.push(secs);
        }
    }
    times.sort_unstable();
    times
}

fn insert_orders(
    tx: &Transaction,
    customers: &[Customer],
    employees: &[Employee],
    products: &[Product],
) -> rusqlite::Result<Vec<Order>> {
    let mut rng = Rng::new(0x0DE2_5EED_0000_7777);
    let times = order_times(&mut rng);
    // A fixed shuffle of the catalogue decides which products sell best.
    let mut popularity: Vec<usize> = (0..products.len()).collect();
    for i in (1..popularity.len()).rev() {
        let j = rng.index(i + 1);
        popularity.swap(i, j);
    }
    let mut order_stmt = tx.prepare(
        "INSERT INTO orders (order_id, customer_id, employee_id, warehouse_id, order_date, \
         channel, status, shipped_at, delivered_at, shipping_method, shipping_cost, \
         total_amount, payment_method, ship_city, ship_country) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let mut line_stmt = tx.prepare(
        "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, \
         discount_percent, line_total) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut orders = Vec::with_capacity(ORDER_COUNT);
    let mut signed_up = 0;
    for (i, &placed) in times.iter().enumerate() {
        let id = i as i64 + 1;
        let day = placed / DAY;
        while signed_up < customers.len() && customers[signed_up].signup_day <= day {
            signed_up += 1;
        }
        // Loyal early customers order more often than the rest.
        let c = if rng.percent(40) {
            rng.low_index(signed_up)
        } else {
            rng.index(signed_up)
        };
        let cust = &customers[c];

        let (channel, employee) = match cust.segment {
            Segment::Consumer => (
                *rng.pick(&["web", "web", "web", "mobile_app", "marketplace"]),
                None,
            ),
            _ => match cust.account_manager {
                Some(am) if rng.percent(70) => ("sales_rep", Some(am)),
                _ if rng.percent(50) => (
                    "phone",
                    sales_rep(&mut rng, employees, cust.city.region, day),
                ),
                _ => ("web", None),
            },
        };
        let warehouse = (cust.city.region as usize - 1) * 2 + usize::from(rng.percent(40));

        // Lines: distinct products, popular ones more often; discontinued items leave the shop.
        let line_count = rng.weighted(&[18, 24, 22, 15, 9, 6, 4, 2])
            + 1
            + if cust.segment == Segment::Enterprise {
                rng.index(3)
            } else {
                0
            };
        let mut lines: Vec<(usize, i64)> = Vec::with_capacity(line_count);
        let mut line_rows = Vec::with_capacity(line_count);
        let mut subtotal = 0;
        while lines.len() < line_count {
            let p = popularity[rng.low_index(popularity.len())];
            if lines.iter().any(|&(q, _)| q == p)
                || (products[p].discontinued && day >= days_from_civil(2025, 1, 1))
            {
                continue;
            }
            let quantity = match cust.segment {
                Segment::Consumer => rng.weighted(&[60, 25, 10, 5]) as i64 + 1,
                Segment::SmallBusiness => rng.range(1, 12),
                Segment::Enterprise => rng.range(5, 60),
            };
            let discount = match cust.segment {
                Segment::Enterprise => *rng.pick(&[5, 10, 10, 15]),
                _ if rng.percent(12) => *rng.pick(&[5, 10, 15, 20]),
                _ => 0,
            };
            let price = products[p].price_cents;
            let line_total = (quantity * price * (100 - discount) + 50) / 100;
            subtotal += line_total;
            lines.push((p, line_total));
            line_rows.push((p, quantity, price, discount, line_total));
        }

        let method = if cust.segment == Segment::Enterprise && subtotal > 500_000 {
            "Freight"
        } else {
            ["Standard", "Express", "Overnight"][rng.weighted(&[68, 26, 6])]
        };
        let shipping_cents = match method {
            "Standard" if subtotal >= 7_500 => 0,
            "Standard" => rng.range(499, 999),
            "Express" => rng.range(1_499, 2_499),
            "Overnight" => rng.range(2_999, 4_999),
            _ => rng.range(8_999, 24_999),
        };
        let total_cents = subtotal + shipping_cents;
        let payment = match cust.segment {
            Segment::Consumer => ["Credit Card", "PayPal", "Gift Card"][rng.weighted(&[70, 25, 5])],
            _ => ["Credit Card", "Bank Transfer", "Invoice (Net 30)"][rng.weighted(&[35, 25, 40])],
        };

        // Fulfilment, judged against the snapshot moment.
        let (mut status, mut shipped, mut delivered) = (Status::Pending, None, None);
        if rng.percent(3) {
            status = Status::Cancelled;
        } else if AS_OF - placed >= 6 * HOUR {
            status = Status::Processing;
            let mut handling = rng.range(3 * HOUR, 60 * HOUR);
            if rng.percent(5) {
                handling += rng.range(3 * DAY, 10 * DAY); // backorders and the odd lost pick
            }
            let ship_time = placed + handling;
            if ship_time <= AS_OF {
                status = Status::Shipped;
                shipped = Some(ship_time);
                let transit = match method {
                    "Overnight" => rng.range(14 * HOUR, 30 * HOUR),
                    "Express" => rng.range(DAY, 3 * DAY),
                    "Freight" => rng.range(4 * DAY, 10 * DAY),
                    _ => rng.range(2 * DAY, 7 * DAY),
                };
                if ship_time + transit <= AS_OF {
                    status = if rng.percent(3) {
                        Status::Returned
                    } else {
                        Status::Delivered
                    };
                    delivered = Some(ship_time + transit);
                }
            }
        }

        order_stmt.execute(params![
            id,
            cust.id,
            employee,
            warehouse as i64 + 1,
            timestamp(placed),
            channel,
            status.name(),
            shipped.map(timestamp),
            delivered.map(timestamp),
            method,
            money(shipping_cents),
            money(total_cents),
            payment,
            cust.city.name,
            cust.city.country,
        ])?;
        for (n, (p, quantity, price, discount, line_total)) in line_rows.into_iter().enumerate() {
            line_stmt.execute(params![
                id,
                n as i64 + 1,
                p as i64 + 1,
                quantity,
                money(price),
                discount,
                money(line_total),
            ])?;
        }
        orders.push(Order {
            id,
            customer: c,
            placed,
            status,
            shipped,
            delivered,
            method,
            warehouse,
            total_cents,
            shipping_cents,
            lines,
        });
    }
    Ok(orders)
}

// ---------------------------------------------------------------------------------------------
// Support tickets
// ---------------------------------------------------------------------------------------------

/// One kind of problem a customer writes in about, with what support did about it.
/// Placeholders in braces are filled by [`fill`].
struct Issue {
    subject: &'static str,
    problem: &'static str,
    /// A second sentence elaborating on the problem.
    detail: &'static str,
    resolutions: &'static [&'static str],
}

/// A ticket category: its issues and the requests customers end their message with.
struct TicketKind {
    category: &'static str,
    issues: &'static [Issue],
    asks: &'static [&'static str],
}

static SHIPPING: TicketKind = TicketKind {
    category: "shipping",
    issues: &[
        Issue {
            subject: "Shipping delay on order #{order}",
            problem: "My order #{order} was supposed to arrive {days} days ago and there is still no sign of it.",
            detail: "This shipping delay is causing real problems for us, and the tracking page has not changed since the parcel left the {warehouse} warehouse.",
            resolutions: &[
                "Contacted the carrier and confirmed the parcel was held at a regional hub because of a sorting backlog; it was released and delivered two days later.",
                "Refunded the shipping cost to the original payment method as an apology for the shipping delay and shared the updated tracking link.",
            ],
        },
        Issue {
            subject: "Tracking number not updating for order #{order}",
            problem: "The tracking page for order #{order} has shown 'label created' for {days} days.",
            detail: "The carrier says it never received the parcel, so I suspect it is still sitting in your warehouse.",
            resolutions: &[
                "Found that the parcel had missed the carrier pickup at the {warehouse} warehouse; it went out the same afternoon with a new tracking number.",
                "Opened an investigation with the carrier, who located the parcel in their depot; delivery was completed the next day.",
            ],
        },
        Issue {
            subject: "Paid for {method} shipping but order #{order} is late",
            problem: "We paid for {method} shipping on order #{order} specifically to get it quickly, but it has been in transit for {days} days.",
            detail: "I understand there can be a shipping delay during busy periods, but nobody has contacted me with an update.",
            resolutions: &[
                "Refunded the {method} shipping charge because the delivery promise was missed, and apologised for the shipping delay.",
                "Confirmed with the carrier that bad weather had closed a sorting centre; gave the customer a 10% discount code for the inconvenience.",
            ],
        },
        Issue {
            subject: "Package marked delivered but not received",
            problem: "The courier marked order #{order} as delivered, but nothing arrived at our address in {city}.",
            detail: "Nobody at the front desk signed for it and the neighbours have not seen it either.",
            resolutions: &[
                "Opened a lost-package claim with the carrier and sent a replacement order from the {warehouse} warehouse.",
                "The carrier's GPS record showed delivery to the wrong street; the driver retrieved the parcel and delivered it the next morning.",
            ],
        },
        Issue {
            subject: "Item missing from order #{order}",
            problem: "Part of order #{order} arrived, but the {product} is missing from the shipment.",
            detail: "The packing slip lists it, so it looks like it was never packed.",
            resolutions: &[
                "Reshipped the missing {product} via Express at no charge and sent the customer the new tracking number.",
                "Explained that the order had been split into two shipments; the second package, with the {product}, arrived the next day.",
            ],
        },
    ],
    asks: &[
        "Can you tell me when it will actually arrive?",
        "If it cannot arrive this week, I would like a refund.",
        "Please send a new tracking number or reship the order.",
        "Please let me know what happened.",
    ],
};

static BILLING: TicketKind = TicketKind {
    category: "billing",
    issues: &[
        Issue {
            subject: "Charged twice for order #{order}",
            problem: "I was charged twice for order #{order}: two identical charges of ${total} appear on my card statement.",
            detail: "Only one order shows up in my account history.",
            resolutions: &[
                "Verified the duplicate authorisation with the payment processor; the second charge was voided and a refund of ${total} was issued.",
                "The second charge was an authorisation hold that was never captured; explained that it drops off the statement within 7 days and no refund is needed.",
            ],
        },
        Issue {
            subject: "Need a corrected invoice for order #{order}",
            problem: "The invoice for order #{order} lists the wrong company name and VAT number.",
            detail: "Our accounts team cannot process it until it is corrected.",
            resolutions: &[
                "Issued a corrected invoice with the right billing details and e-mailed the PDF to the customer's accounts payable address.",
                "Updated the billing profile so future invoices carry the right company name and VAT number, and re-issued this invoice.",
            ],
        },
        Issue {
            subject: "Refund not received for order #{order}",
            problem: "I was told a refund would be issued for order #{order}, but after {days} days nothing has come back to my account.",
            detail: "The order confirmation says the amount was ${total}.",
            resolutions: &[
                "Confirmed the refund was processed on our side; banks can take 5 to 10 business days to post it. Shared the refund reference number.",
                "The refund had failed because the original card had expired; re-issued the refund of ${total} by bank transfer.",
            ],
        },
        Issue {
            subject: "Purchase order number missing from invoice",
            problem: "Our finance department needs a copy of the invoice for order #{order} with our purchase order number on it.",
            detail: "Without the PO number the invoice will be rejected by our payables system.",
            resolutions: &[
                "Added the PO number to the invoice and re-sent it to the finance contact.",
            ],
        },
        Issue {
            subject: "Discount missing from invoice",
            problem: "The total on the invoice for order #{order} does not match the quote; it looks like the agreed discount was not applied.",
            detail: "The difference is small, but our approval process requires the amounts to match exactly.",
            resolutions: &[
                "Applied the missing discount and refunded the difference to the original payment method.",
                "Explained that the quoted discount had expired before the order was placed; as a courtesy, issued a credit note for the difference.",
            ],
        },
    ],
    asks: &[
        "Please sort this out as soon as possible.",
        "Could you confirm when this will be fixed?",
        "Please explain what happened.",
        "A quick reply would be appreciated.",
    ],
};

/// Billing complaints about cancelled orders, which only make sense for those.
static CANCELLED_BILLING: TicketKind = TicketKind {
    category: "billing",
    issues: &[Issue {
        subject: "Payment taken for cancelled order #{order}",
        problem: "I cancelled order #{order} within the hour, but the payment of ${total} was still taken.",
        detail: "The order shows as cancelled in my account.",
        resolutions: &[
            "Confirmed the cancellation and issued a full refund of ${total}; it was posted to the customer's card three days later.",
            "The payment was only an authorisation hold; it was released and disappeared from the statement within a few days.",
        ],
    }],
    asks: &[
        "Please refund the payment.",
        "When will I get my money back?",
    ],
};

static ACCOUNT: TicketKind = TicketKind {
    category: "account",
    issues: &[
        Issue {
            subject: "Cannot log in to my account",
            problem: "I have not been able to log in since yesterday; the site says my password is incorrect.",
            detail: "I reset the password twice and the login still fails.",
            resolutions: &[
                "Reset the account lockout and confirmed the customer could log in again.",
                "Found two accounts under similar e-mail addresses; merged them and the login works.",
            ],
        },
        Issue {
            subject: "Password reset e-mail never arrives",
            problem: "The password reset e-mail never arrives, and I have checked the spam folder.",
            detail: "I have tried from two different browsers.",
            resolutions: &[
                "The password reset e-mails were blocked by the customer's mail server; once our sending domain was allow-listed the reset worked.",
            ],
        },
        Issue {
            subject: "Account locked after failed login attempts",
            problem: "My account was locked after too many failed login attempts and the unlock link has expired.",
            detail: "I need to place an order today.",
            resolutions: &[
                "Unlocked the account after verifying the customer's identity and sent a fresh password reset link.",
            ],
        },
        Issue {
            subject: "Two-factor code not accepted",
            problem: "The two-factor authentication code from my phone is rejected every time I try to sign in.",
            detail: "The phone's clock is set automatically, so it should be in sync.",
            resolutions: &[
                "Re-synchronised the two-factor authentication secret and the customer signed in successfully.",
                "Disabled two-factor authentication temporarily after identity checks so the customer could re-enrol with a new phone.",
            ],
        },
        Issue {
            subject: "Need to change the e-mail address on my account",
            problem: "I changed jobs and need to move the account to a new e-mail address, but the login page keeps using the old one.",
            detail: "",
            resolutions: &[
                "Updated the login e-mail address after verifying the customer's identity through the billing details on file.",
            ],
        },
        Issue {
            subject: "Access denied on our business account",
            problem: "Colleagues on our business account can log in, but my user gets an 'access denied' error.",
            detail: "This started after our administrator changed some permissions.",
            resolutions: &[
                "Restored the user's role on the business account; the access denied error no longer appears.",
            ],
        },
    ],
    asks: &[
        "Can you help?",
        "Please tell me what I am doing wrong.",
        "I need this sorted before the end of the week.",
        "Please let me know the next steps.",
    ],
};

static PRODUCT_QUALITY: TicketKind = TicketKind {
    category: "product_quality",
    issues: &[
        Issue {
            subject: "Item arrived damaged",
            problem: "The {product} from order #{order} arrived damaged: the box was crushed and the item inside is cracked.",
            detail: "I have photos of the packaging and the damage.",
            resolutions: &[
                "Sent a replacement {product} via Express shipping; the customer does not need to return the damaged unit.",
                "Issued a full refund of ${line} for the damaged item and filed a damage report with the carrier.",
            ],
        },
        Issue {
            subject: "Defective {product}",
            problem: "The {product} is defective; it stopped working after only {days} days of normal use.",
            detail: "We followed the instructions in the manual exactly.",
            resolutions: &[
                "Escalated to the supplier's quality team; the batch was flagged and the customer received a replacement from new stock.",
                "Walked the customer through troubleshooting; the unit was still faulty, so a refund of ${line} was issued.",
            ],
        },
        Issue {
            subject: "Wrong item received in order #{order}",
            problem: "We received the wrong item: the packing slip says {product}, but the box contained something else.",
            detail: "",
            resolutions: &[
                "Collected the wrong item with a prepaid return label and shipped the correct {product}.",
            ],
        },
        Issue {
            subject: "Several units arrived damaged",
            problem: "Several units of the {product} arrived damaged, apparently because there was no padding in the carton.",
            detail: "About a third of them cannot be sold.",
            resolutions: &[
                "Refunded ${line} for the damaged units and asked the {warehouse} warehouse to review how it packs fragile items.",
            ],
        },
        Issue {
            subject: "Missing parts in package",
            problem: "The {product} is missing parts, so we cannot assemble it.",
            detail: "",
            resolutions: &[
                "Shipped the missing parts separately and confirmed receipt with the customer.",
            ],
        },
        Issue {
            subject: "{product} does not match the description",
            problem: "The {product} does not match the description on the website; the colour and size are different.",
            detail: "",
            resolutions: &[
                "Corrected the product page and offered a return with a full refund of ${line}; the customer chose to keep the item with a 20% discount.",
            ],
        },
    ],
    asks: &[
        "I would like a replacement or a refund.",
        "Please advise on the next steps.",
        "Please let me know whether I need to send it back first.",
        "We would prefer a replacement if one is in stock.",
    ],
};

static RETURNS: TicketKind = TicketKind {
    category: "returns",
    issues: &[
        Issue {
            subject: "Return request for order #{order}",
            problem: "I would like to return the {product} from order #{order}; it is not what we expected.",
            detail: "It is unused and still in the original packaging.",
            resolutions: &[
                "Sent a prepaid return label; once the {warehouse} warehouse received the item, a refund of ${line} was issued.",
            ],
        },
        Issue {
            subject: "Refund for returned item",
            problem: "I sent the {product} back {days} days ago and have not received my refund yet.",
            detail: "The tracking shows the parcel was delivered to your warehouse.",
            resolutions: &[
                "Confirmed the returned item was received at the {warehouse} warehouse and processed the refund of ${line} to the original payment method.",
                "The return had been received but not scanned in; processed the refund of ${line} the same day.",
            ],
        },
        Issue {
            subject: "Return label not working",
            problem: "The prepaid return label from your e-mail is rejected by the post office.",
            detail: "",
            resolutions: &[
                "Generated a new prepaid return label; once the warehouse received the item, a refund of ${line} was issued.",
            ],
        },
        Issue {
            subject: "Exchange the {product} for a different size",
            problem: "Can I exchange the {product} for a different size or colour instead of getting a refund?",
            detail: "",
            resolutions: &[
                "Arranged an exchange; the replacement shipped the same day and no refund was needed.",
            ],
        },
        Issue {
            subject: "Cannot submit a return for order #{order}",
            problem: "The website says the return window is 30 days, but the form will not let me submit a return for order #{order}.",
            detail: "",
            resolutions: &[
                "Extended the return window as a courtesy and issued store credit for ${line}.",
                "Explained the return policy for opened items; the customer agreed to keep the product with a 15% partial refund.",
            ],
        },
    ],
    asks: &[
        "Please let me know the next steps.",
        "What is the quickest way to sort this out?",
        "Thank you for your help.",
        "A quick reply would be appreciated.",
    ],
};

static TECHNICAL: TicketKind = TicketKind {
    category: "technical",
    issues: &[
        Issue {
            subject: "Checkout error when paying",
            problem: "Every time I try to complete checkout I get an error saying 'payment could not be processed', although my card works elsewhere.",
            detail: "",
            resolutions: &[
                "Found a bug in the payment gateway integration affecting some card types; a fix was deployed and the customer completed checkout.",
            ],
        },
        Issue {
            subject: "Website keeps timing out",
            problem: "The website keeps timing out when I search for products or open my order history.",
            detail: "Other websites load fine on the same connection.",
            resolutions: &[
                "Cleared a corrupted session on the customer's account; order history and search load normally again.",
            ],
        },
        Issue {
            subject: "Promo code not accepted",
            problem: "The promo code from your newsletter is rejected at checkout as 'expired', but the e-mail says it is valid until the end of the month.",
            detail: "",
            resolutions: &[
                "Re-activated the promo code and applied the discount manually to the customer's next order.",
            ],
        },
        Issue {
            subject: "Mobile app crashes on startup",
            problem: "The mobile app crashes as soon as I open it after the latest update.",
            detail: "Reinstalling it did not help.",
            resolutions: &[
                "Engineering released an app update that fixes the startup crash; the customer confirmed it works.",
            ],
        },
        Issue {
            subject: "Cannot download invoice from the customer portal",
            problem: "When I click 'Download invoice' in the customer portal I get a blank page instead of the PDF.",
            detail: "",
            resolutions: &[
                "Regenerated the invoice PDF and e-mailed it directly; the portal download bug was logged for engineering.",
            ],
        },
        Issue {
            subject: "Bulk order upload fails",
            problem: "The bulk upload of our order spreadsheet fails with an unspecified error.",
            detail: "The same file worked last month.",
            resolutions: &[
                "The spreadsheet used an outdated column order; sent the customer the current template and the upload succeeded.",
            ],
        },
    ],
    asks: &[
        "Is this a known problem?",
        "Please fix this or tell me another way to place the order.",
        "Can someone from your technical team look into it?",
        "Please let me know when it is working again.",
    ],
};

const GREETINGS: &[&str] = &[
    "Hello,",
    "Hi there,",
    "Hi support team,",
    "Good morning,",
    "Dear Harborline support,",
];

/// Extra sentences any ticket may carry.
const CONTEXTS: &[&str] = &[
    "We have been customers for years and this is the first time something like this has happened.",
    "This is the second time this has happened this quarter.",
    "I already tried calling, but the wait time was over 40 minutes.",
];

/// Extra sentences for tickets about an order.
const ORDER_CONTEXTS: &[&str] = &[
    "The order was placed on {date}.",
    "We need these items for a client event next week.",
    "Our office is in {city}, in case that matters.",
];

const CLOSINGS: &[&str] = &[
    "The customer confirmed the issue is resolved.",
    "Closed after no reply from the customer for 7 days.",
    "Added a note to the customer record for future reference.",
    "Followed up by e-mail two days later to confirm the customer was satisfied.",
    "Shared feedback with the relevant team so the issue does not recur.",
];

/// Values a ticket's phrases may mention.
struct Ctx {
    order: String,
    product: String,
    days: i64,
    method: &'static str,
    city: &'static str,
    total: String,
    shipping: String,
    line: String,
    warehouse: &'static str,
    date: String,
}

/// Replaces `{name}` placeholders with values from `ctx`.
fn fill(template: &str, ctx: &Ctx) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = &after[..close];
        match key {
            "order" => out.push_str(&ctx.order),
            "product" => out.push_str(&ctx.product),
            "days" => out.push_str(&ctx.days.to_string()),
            "method" => out.push_str(ctx.method),
            "city" => out.push_str(ctx.city),
            "total" => out.push_str(&ctx.total),
            "shipping" => out.push_str(&ctx.shipping),
            "line" => out.push_str(&ctx.line),
            "warehouse" => out.push_str(ctx.warehouse),
            "date" => out.push_str(&ctx.date),
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A ticket before its id is known: tickets are numbered in the order they were opened.
struct Draft {
    opened: i64,
    customer: usize,
    order: Option<usize>,
    kind: &'static TicketKind,
}

/// Draws the moment a ticket was opened, no earlier than `from`, no later than the snapshot.
fn opened_after(rng: &mut Rng, from: i64, window: i64) -> i64 {
    let latest = AS_OF - 10 * MINUTE;
    let from = from.min(latest);
    (from + rng.range(20 * MINUTE, window.max(20 * MINUTE))).min(latest)
}

fn ticket_drafts(rng: &mut Rng, customers: &[Customer], orders: &[Order]) -> Vec<Draft> {
    let troubled: Vec<usize> = (0..orders.len())
        .filter(|&i| {
            let o = &orders[i];
            matches!(o.status, Status::Cancelled | Status::Returned)
                || o.shipped.is_some_and(|s| s - o.placed > 3 * DAY)
        })
        .collect();
    let mut drafts = Vec::with_capacity(TICKET_COUNT);
    for _ in 0..TICKET_COUNT {
        if rng.percent(77) {
            let o = if !troubled.is_empty() && rng.percent(30) {
                *rng.pick(&troubled)
            } else {
                rng.index(orders.len())
            };
            let order = &orders[o];
            let (kind, opened) = match order.status {
                Status::Cancelled => (&CANCELLED_BILLING, opened_after(rng, order.placed, 3 * DAY)),
                Status::Returned => {
                    let k = if rng.percent(70) { &RETURNS } else { &BILLING };
                    (
                        k,
                        opened_after(rng, order.delivered.unwrap_or(order.placed), 14 * DAY),
                    )
                }
                Status::Pending | Status::Processing => {
                    let k = if rng.percent(80) { &SHIPPING } else { &BILLING };
                    (k, opened_after(rng, order.placed, AS_OF - order.placed))
                }
                Status::Shipped => {
                    let k = if rng.percent(85) { &SHIPPING } else { &BILLING };
                    let from = order.shipped.unwrap_or(order.placed);
                    (k, opened_after(rng, from, AS_OF - from))
                }
                Status::Delivered => {
                    let k = [&SHIPPING, &BILLING, &PRODUCT_QUALITY, &RETURNS]
                        [rng.weighted(&[20, 20, 35, 25])];
                    (
                        k,
                        opened_after(rng, order.delivered.unwrap_or(order.placed), 12 * DAY),
                    )
                }
            };
            drafts.push(Draft {
                opened,
                customer: order.customer,
                order: Some(o),
                kind,
            });
        } else {
            let c = rng.index(customers.len());
            let from = customers[c].signup_day.max(FIRST_ORDER_DAY) * DAY;
            let kind = if rng.percent(60) {
                &ACCOUNT
            } else {
                &TECHNICAL
            };
            let opened = opened_after(rng, from, AS_OF - from);
            drafts.push(Draft {
                opened,
                customer: c,
                order: None,
                kind,
            });
        }
    }
    // Stable sort: ties keep the order they were drawn in.
    drafts.sort_by_key(|d| d.opened);
    drafts
}

fn insert_tickets(
    tx: &Transaction,
    customers: &[Customer],
    employees: &[Employee],
    products: &[Product],
    orders: &[Order],
) -> rusqlite::Result<()> {
    let mut rng = Rng::new(0x71C4_E7D0_5EED_0003);
    let drafts = ticket_drafts(&mut rng, customers, orders);
    let agents: Vec<&Employee> = employees
        .iter()
        .filter(|e| e.role == Role::SupportAgent)
        .collect();
    let mut stmt = tx.prepare(
        "INSERT INTO support_tickets (ticket_id, customer_id, order_id, product_id, assigned_to, \
         category, priority, status, channel, subject, description, opened_at, closed_at, \
         resolution, satisfaction_score) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    for (i, d) in drafts.iter().enumerate() {
        let id = i as i64 + 1;
        let cust = &customers[d.customer];
        let kind = d.kind;
        let order = d.order.map(|o| &orders[o]);
        let line = order.and_then(|o| o.lines.get(rng.index(o.lines.len())).copied());
        let ctx = Ctx {
            order: order.map_or_else(String::new, |o| o.id.to_string()),
            product: line.map_or_else(|| "item".to_string(), |(p, _)| products[p].name.clone()),
            days: rng.range(2, 12),
            method: order.map_or("Standard", |o| o.method),
            city: cust.city.name,
            total: money(order.map_or(0, |o| o.total_cents)),
            shipping: money(order.map_or(0, |o| o.shipping_cents)),
            line: money(line.map_or(0, |(_, cents)| cents)),
            warehouse: order.map_or("", |o| WAREHOUSES[o.warehouse].city),
            date: order.map_or_else(String::new, |o| date(o.placed / DAY)),
        };
        let product_id = match kind.category {
            "product_quality" | "returns" => line.map(|(p, _)| p as i64 + 1),
            _ => None,
        };

        let mut priority = rng.weighted(&[30, 45, 20, 5]);
        if (cust.segment == Segment::Enterprise || kind.category == "product_quality")
            && priority < 3
            && rng.percent(40)
        {
            priority += 1;
        }
        let age = AS_OF - d.opened;
        let status = if age < DAY {
            ["open", "in_progress"][rng.weighted(&[60, 40])]
        } else if age < 4 * DAY {
            ["open", "in_progress", "waiting_on_customer", "resolved"]
                [rng.weighted(&[20, 40, 15, 25])]
        } else {
            [
                "resolved",
                "closed",
                "open",
                "in_progress",
                "waiting_on_customer",
            ][rng.weighted(&[45, 52, 1, 1, 1])]
        };
        let done = matches!(status, "resolved" | "closed");
        let closed_at = done.then(|| {
            let (lo, hi) = [
                (8 * HOUR, 7 * DAY),
                (4 * HOUR, 4 * DAY),
                (2 * HOUR, 2 * DAY),
                (HOUR, 12 * HOUR),
            ][priority];
            (d.opened + rng.range(lo, hi)).min(AS_OF)
        });
        let day = d.opened / DAY;
        let assigned_to = if status == "open" && rng.percent(50) {
            None
        } else {
            let on_duty: Vec<&&Employee> = agents.iter().filter(|e| e.active_on(day)).collect();
            (!on_duty.is_empty()).then(|| rng.pick(&on_duty).id)
        };

        let issue = &kind.issues[rng.index(kind.issues.len())];
        let subject = fill(issue.subject, &ctx);
        let greeting = if rng.percent(60) {
            *rng.pick(GREETINGS)
        } else {
            ""
        };
        let mut text = Vec::with_capacity(5);
        text.push(fill(issue.problem, &ctx));
        if !issue.detail.is_empty() && rng.percent(75) {
            text.push(fill(issue.detail, &ctx));
        }
        if rng.percent(45) {
            let pool = if order.is_some() && rng.percent(50) {
                ORDER_CONTEXTS
            } else {
                CONTEXTS
            };
            text.push(fill(pool[rng.index(pool.len())], &ctx));
        }
        text.push((*rng.pick(kind.asks)).to_string());
        let body = text.join(" ");
        let description = if greeting.is_empty() {
            format!("{body}\n\nThanks,\n{} {}", cust.first, cust.last)
        } else {
            format!(
                "{greeting}\n\n{body}\n\nThanks,\n{} {}",
                cust.first, cust.last
            )
        };

        let resolution = done.then(|| {
            let mut r = fill(issue.resolutions[rng.index(issue.resolutions.len())], &ctx);
            r.push(' ');
            r.push_str(CLOSINGS[rng.index(CLOSINGS.len())]);
            r
        });
        let satisfaction =
            (done && rng.percent(60)).then(|| rng.weighted(&[6, 8, 14, 32, 40]) as i64 + 1);

        stmt.execute(params![
            id,
            cust.id,
            order.map(|o| o.id),
            product_id,
            assigned_to,
            kind.category,
            ["low", "medium", "high", "urgent"][priority],
            status,
            ["email", "web_form", "chat", "phone"][rng.weighted(&[40, 25, 20, 15])],
            subject,
            description,
            timestamp(d.opened),
            closed_at.map(timestamp),
            resolution,
            satisfaction,
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::ValueRef;

    const TABLES: [&str; 10] = [
        "regions",
        "employees",
        "warehouses",
        "categories",
        "suppliers",
        "products",
        "customers",
        "orders",
        "order_lines",
        "support_tickets",
    ];

    fn demo() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        generate(&mut conn).unwrap();
        conn
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// FNV-1a over every value of every table, with type tags, in rowid order.
    fn fingerprint(conn: &Connection) -> u64 {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01B3);
            }
        };
        for table in TABLES {
            eat(table.as_bytes());
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .unwrap();
            let n = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..n {
                    match row.get_ref(i).unwrap() {
                        ValueRef::Null => eat(b"N"),
                        ValueRef::Integer(v) => {
                            eat(b"I");
                            eat(&v.to_le_bytes());
                        }
                        ValueRef::Real(v) => {
                            eat(b"R");
                            eat(&v.to_bits().to_le_bytes());
                        }
                        ValueRef::Text(t) => {
                            eat(b"T");
                            eat(t);
                            eat(&[0]);
                        }
                        ValueRef::Blob(b) => {
                            eat(b"B");
                            eat(&(b.len() as u64).to_le_bytes());
                            eat(b);
                        }
                    }
                }
            }
        }
        h
    }

    #[test]
    fn generating_twice_gives_identical_content() {
        assert_eq!(fingerprint(&demo()), fingerprint(&demo()));
    }

    /// If this fails the generated content changed: bump DEMO_VERSION and update the constant.
    #[test]
    fn content_matches_the_pinned_fingerprint_of_this_version() {
        assert_eq!(DEMO_VERSION, 1);
        assert_eq!(
            fingerprint(&demo()),
            16_613_562_154_244_327_326,
            "the generated content changed: bump DEMO_VERSION and re-pin this fingerprint"
        );
    }

    #[test]
    fn user_version_is_the_demo_version() {
        assert_eq!(count(&demo(), "PRAGMA user_version"), DEMO_VERSION);
    }

    #[test]
    fn holds_at_least_fifty_thousand_rows_and_every_table_has_some() {
        let conn = demo();
        let mut total = 0;
        for table in TABLES {
            let n = count(&conn, &format!("SELECT COUNT(*) FROM {table}"));
            assert!(n > 0, "{table} is empty");
            total += n;
        }
        assert!(total >= 50_000, "only {total} rows");
    }

    #[test]
    fn every_table_declares_a_primary_key() {
        let conn = demo();
        for table in TABLES {
            let n = count(
                &conn,
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE pk > 0"),
            );
            assert!(n > 0, "{table} has no primary key");
        }
        let pk: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('order_lines') WHERE pk > 0 ORDER BY pk")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pk, ["order_id", "line_no"]);
    }

    #[test]
    fn foreign_keys_are_declared_and_hold() {
        let conn = demo();
        let expected = [
            ("employees", 2),
            ("warehouses", 2),
            ("products", 2),
            ("customers", 2),
            ("orders", 3),
            ("order_lines", 2),
            ("support_tickets", 4),
        ];
        for (table, n) in expected {
            let declared = count(
                &conn,
                &format!("SELECT COUNT(*) FROM pragma_foreign_key_list('{table}')"),
            );
            assert_eq!(declared, n, "{table}");
        }
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM pragma_foreign_key_check"),
            0
        );
        let self_ref = count(
            &conn,
            "SELECT COUNT(*) FROM pragma_foreign_key_list('employees') \
             WHERE \"table\" = 'employees' AND \"from\" = 'manager_id'",
        );
        assert_eq!(self_ref, 1);
    }

    #[test]
    fn generation_leaves_the_foreign_keys_setting_as_it_was() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        generate(&mut conn).unwrap();
        assert_eq!(count(&conn, "PRAGMA foreign_keys"), 0);
    }

    #[test]
    fn support_tickets_mention_the_keywords_people_search_for() {
        let conn = demo();
        for word in ["refund", "shipping delay", "invoice", "login", "damaged"] {
            let n = count(
                &conn,
                &format!(
                    "SELECT COUNT(*) FROM support_tickets WHERE description LIKE '%{word}%' \
                     OR resolution LIKE '%{word}%' OR subject LIKE '%{word}%'"
                ),
            );
            assert!(n >= 20, "'{word}' found in only {n} tickets");
        }
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE description LIKE '%{%'"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE resolution LIKE '%{%'"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE subject LIKE '%{%'"
            ),
            0
        );
        let long = count(
            &conn,
            "SELECT CAST(AVG(length(description)) AS INTEGER) FROM support_tickets",
        );
        assert!(long > 200, "descriptions average {long} characters");
    }

    #[test]
    fn nulls_appear_where_promised() {
        let conn = demo();
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM employees WHERE manager_id IS NULL"
            ),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT manager_id IS NULL FROM employees WHERE job_title = 'Chief Executive Officer'"
            ),
            1
        );
        let open = count(
            &conn,
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending','processing','cancelled')",
        );
        assert!(open > 0);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE shipped_at IS NULL"
            ),
            open
        );
        let phones = count(&conn, "SELECT COUNT(*) FROM customers WHERE phone IS NULL");
        assert!(
            (300..=700).contains(&phones),
            "{phones} customers without phone"
        );
        let unresolved = count(
            &conn,
            "SELECT COUNT(*) FROM support_tickets WHERE status NOT IN ('resolved','closed')",
        );
        assert!(unresolved > 0);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE resolution IS NULL"
            ),
            unresolved
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE closed_at IS NULL"
            ),
            unresolved
        );
        let thumbs = count(
            &conn,
            "SELECT COUNT(*) FROM products WHERE thumbnail IS NOT NULL",
        );
        assert!(thumbs > 0 && thumbs < 100, "{thumbs} thumbnails");
        assert!(count(&conn, "SELECT COUNT(*) FROM customers WHERE notes IS NULL") > 0);
        assert!(
            count(
                &conn,
                "SELECT COUNT(*) FROM customers WHERE notes IS NOT NULL"
            ) > 0
        );
    }

    #[test]
    fn thumbnails_are_png_images() {
        let conn = demo();
        let blob: Vec<u8> = conn
            .query_row(
                "SELECT thumbnail FROM products WHERE thumbnail IS NOT NULL LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(&blob[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&blob[blob.len() - 8..blob.len() - 4], b"IEND");
    }

    #[test]
    fn dates_are_iso_8601_and_in_order() {
        let conn = demo();
        let bad_ts = count(
            &conn,
            "SELECT COUNT(*) FROM orders WHERE strftime('%Y-%m-%dT%H:%M:%SZ', order_date) IS NOT order_date \
             OR strftime('%Y-%m-%dT%H:%M:%SZ', shipped_at) IS NOT shipped_at",
        );
        assert_eq!(bad_ts, 0);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM customers WHERE date(signup_date) IS NOT signup_date"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE shipped_at < order_date OR delivered_at < shipped_at"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM support_tickets WHERE closed_at < opened_at"
            ),
            0
        );
        let before_signup = count(
            &conn,
            "SELECT COUNT(*) FROM orders o JOIN customers c USING (customer_id) WHERE date(o.order_date) < c.signup_date",
        );
        assert_eq!(before_signup, 0);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE order_date > '2025-06-30T18:00:00Z'"
            ),
            0
        );
    }

    #[test]
    fn order_totals_add_up_to_the_lines_plus_shipping() {
        let conn = demo();
        let wrong = count(
            &conn,
            "SELECT COUNT(*) FROM orders o WHERE CAST(round(o.total_amount * 100) AS INTEGER) != \
             CAST(round(o.shipping_cost * 100) AS INTEGER) + \
             (SELECT SUM(CAST(round(l.line_total * 100) AS INTEGER)) FROM order_lines l WHERE l.order_id = o.order_id)",
        );
        assert_eq!(wrong, 0);
    }

    #[test]
    fn emails_are_lowercase() {
        let conn = demo();
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM customers WHERE email != lower(email)"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM employees WHERE email != lower(email)"
            ),
            0
        );
    }

    #[test]
    fn refuses_a_database_that_is_not_empty_and_leaves_it_untouched() {
        let mut conn = demo();
        let before = fingerprint(&conn);
        assert!(generate(&mut conn).is_err());
        assert_eq!(fingerprint(&conn), before);
    }

    #[test]
    fn calendar_conversions_round_trip() {
        for day in [-1, 0, 59, 365, 10_956, FIRST_ORDER_DAY, AS_OF / DAY, 30_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(timestamp(AS_OF), "2025-06-30T18:00:00Z");
    }
}
