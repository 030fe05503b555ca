//! The operator's descriptions of tables and columns (`[[database]] table_descriptions` and
//! `column_descriptions`), laid over the catalog each scope sees: for databases without SQL
//! Server's `MS_Description`, for SQLite (which keeps none), and to correct what the database
//! says. They win over the database's own.

use std::collections::BTreeMap;

use crate::db::{Catalog, TableInfo, description_text};

/// One name as written: `table`, `schema.table`, `table.column` or `schema.table.column`.
#[derive(Debug, Clone)]
struct Target {
    schema: Option<String>,
    table: String,
    column: Option<String>,
    /// The name as the config wrote it, for the warning about names that match nothing.
    written: String,
}

/// The descriptions of one database, ready to lay over a catalog.
#[derive(Debug, Clone, Default)]
pub struct Descriptions {
    entries: Vec<(Target, String)>,
}

impl Descriptions {
    /// From the config maps, which [`crate::config::Config::validate`] checked: table names
    /// have one or two parts, column names two or three, none empty.
    pub fn new(tables: &BTreeMap<String, String>, columns: &BTreeMap<String, String>) -> Self {
        let mut entries = Vec::new();
        for (name, text) in tables {
            let Some(text) = description_text(text) else {
                continue;
            };
            let parts: Vec<&str> = name.split('.').collect();
            let (schema, table) = match parts.as_slice() {
                [t] => (None, *t),
                [s, t] => (Some(s.to_string()), *t),
                _ => continue,
            };
            entries.push((
                Target {
                    schema,
                    table: table.to_string(),
                    column: None,
                    written: name.clone(),
                },
                text,
            ));
        }
        for (name, text) in columns {
            let Some(text) = description_text(text) else {
                continue;
            };
            let parts: Vec<&str> = name.split('.').collect();
            let (schema, table, column) = match parts.as_slice() {
                [t, c] => (None, *t, *c),
                [s, t, c] => (Some(s.to_string()), *t, *c),
                _ => continue,
            };
            entries.push((
                Target {
                    schema,
                    table: table.to_string(),
                    column: Some(column.to_string()),
                    written: name.clone(),
                },
                text,
            ));
        }
        // A name with its schema is more precise than one without: laid over it, so it wins.
        entries.sort_by_key(|(target, _)| target.schema.is_some());
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets the descriptions on `catalog`'s tables and columns (what a scope sees: a
    /// description of a hidden table or column has nothing to land on).
    pub fn apply(&self, catalog: &mut Catalog) {
        for (target, text) in &self.entries {
            for t in catalog.tables.iter_mut().filter(|t| names(target, t)) {
                match &target.column {
                    None => t.description = Some(text.clone()),
                    Some(column) => {
                        if let Some(c) = t
                            .columns
                            .iter_mut()
                            .find(|c| c.name.eq_ignore_ascii_case(column))
                        {
                            c.description = Some(text.clone());
                        }
                    }
                }
            }
        }
    }

    /// The names, as written, that match no table or column of `catalog` (the database's
    /// whole catalog): most likely typos.
    pub fn unmatched(&self, catalog: &Catalog) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(target, _)| {
                !catalog.tables.iter().any(|t| {
                    names(target, t)
                        && target.column.as_ref().is_none_or(|c| {
                            t.columns.iter().any(|tc| tc.name.eq_ignore_ascii_case(c))
                        })
                })
            })
            .map(|(target, _)| target.written.as_str())
            .collect()
    }
}

/// Whether `target` names `table` (names compared up to ASCII case; a name without a schema
/// matches the table in any schema).
fn names(target: &Target, table: &TableInfo) -> bool {
    target.table.eq_ignore_ascii_case(&table.name)
        && target
            .schema
            .as_ref()
            .is_none_or(|s| s.eq_ignore_ascii_case(&table.schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table whose every column, and itself, the database describes.
    fn table(schema: &str, name: &str, columns: &[&str]) -> TableInfo {
        let mut t = crate::tools::testing::table_info(schema, name, columns);
        for c in &mut t.columns {
            c.description = Some("from the database".into());
        }
        t.description = Some("from the database".into());
        t
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn config_descriptions_win_match_names_up_to_ascii_case_and_report_typos() {
        let mut catalog = Catalog {
            varchar_utf8: false,
            synonyms: Vec::new(),
            tables: vec![
                table("dbo", "Orders", &["Id", "Status"]),
                table("sales", "Orders", &["Id"]),
                table("dbo", "Customers", &["Id"]),
            ],
        };
        let d = Descriptions::new(
            &map(&[
                ("orders", "every Orders table"),
                ("SALES.orders", "the sales one"),
                ("Custmers", "a typo"),
                ("dbo.Customers", "  "),
            ]),
            &map(&[
                ("dbo.orders.STATUS", "o, s or c"),
                ("Orders.Nope", "no such column"),
            ]),
        );
        assert!(!d.is_empty());
        d.apply(&mut catalog);
        let desc = |i: usize| catalog.tables[i].description.as_deref();
        // The name with a schema wins over the one without, whatever their order.
        assert_eq!(desc(0), Some("every Orders table"));
        assert_eq!(desc(1), Some("the sales one"));
        assert_eq!(
            desc(2),
            Some("from the database"),
            "a blank one is left out"
        );
        assert_eq!(
            catalog.tables[0].columns[1].description.as_deref(),
            Some("o, s or c")
        );
        assert_eq!(
            catalog.tables[1].columns[0].description.as_deref(),
            Some("from the database")
        );
        assert_eq!(d.unmatched(&catalog), vec!["Custmers", "Orders.Nope"]);
    }
}
