//! TEMPORARY stub until the guard lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlDialect {
    Sqlite,
    MsSql,
}
#[derive(Clone, Debug, Default)]
pub struct AccessRules {
    pub allow_tables: Vec<String>,
    pub deny_tables: Vec<String>,
    pub deny_columns: Vec<String>,
}
impl AccessRules {
    pub fn table_visible(&self, _schema: Option<&str>, _table: &str) -> bool {
        true
    }
    pub fn column_denied(&self, _schema: Option<&str>, _table: &str, _column: &str) -> bool {
        false
    }
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}
#[derive(Debug, Clone)]
pub struct CheckedQuery {
    pub tables: Vec<TableRef>,
    pub has_order_by: bool,
}
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GuardError {
    #[error("parse: {0}")]
    Parse(String),
}
pub fn check(
    _sql: &str,
    _dialect: SqlDialect,
    _rules: &AccessRules,
) -> Result<CheckedQuery, GuardError> {
    Ok(CheckedQuery {
        tables: vec![],
        has_order_by: false,
    })
}
