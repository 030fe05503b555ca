//! TEMPORARY stub.
pub const DEMO_VERSION: i64 = 1;
pub fn generate(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, notes TEXT); INSERT INTO customers VALUES (1,'Anna','wants a refund'); PRAGMA user_version=1;")
}
