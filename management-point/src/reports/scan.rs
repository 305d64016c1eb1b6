//! Device lists a page at a time: the devices are read from the store in chunks in key order
//! (tenant, controller id), each turned into rows, filtered, and kept only as far as the page
//! asked for. A report never holds the fleet: an unsorted page holds its own rows, a sorted
//! one the rows up to its end (offset plus limit) and one chunk.

use std::cmp::Ordering;

use crate::error::Result;
use crate::model::Device;
use crate::storage::Storage;

/// Devices read from the store at a time.
pub const CHUNK: usize = 500;

/// Which page of a device list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paging {
    /// An unsorted page starts after this device (tenant, controller id).
    pub after: Option<(String, String)>,
    /// A sorted page starts after this many rows.
    pub offset: usize,
    /// The most rows a page holds; `None` is every row (the command line, exports).
    pub limit: Option<usize>,
}

/// Where the next page starts, when there may be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// After this device (tenant, controller id).
    After(String, String),
    /// After this many rows (sorted pages).
    Offset(usize),
}

/// How rows are chosen and ordered.
#[derive(Debug, Clone, Default)]
pub struct Arrange {
    /// Rows with a cell containing this (any case) are kept.
    pub filter: Option<String>,
    /// The column to sort by; `None` is key order.
    pub sort: Option<usize>,
    /// Sorted largest first.
    pub desc: bool,
}

impl Arrange {
    /// Whether `row` passes the filter.
    pub fn keeps(&self, row: &[String]) -> bool {
        match self.filter.as_deref().filter(|f| !f.is_empty()) {
            None => true,
            Some(f) => {
                let f = f.to_lowercase();
                row.iter().any(|c| c.to_lowercase().contains(&f))
            }
        }
    }

    /// Filters and sorts rows that are all in memory (the summaries).
    pub fn apply(&self, rows: &mut Vec<Vec<String>>) {
        rows.retain(|r| self.keeps(r));
        if let Some(i) = self.sort {
            rows.sort_by(|a, b| self.order(a, b, i));
        }
    }

    /// Numbers as numbers, the rest as text; stable, so equal cells stay in key order.
    fn order(&self, a: &[String], b: &[String], i: usize) -> Ordering {
        let (x, y) = (a.get(i).map_or("", String::as_str), b.get(i).map_or("", String::as_str));
        let o = match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.cmp(y),
        };
        if self.desc { o.reverse() } else { o }
    }
}

/// A page of rows and where the next one starts.
pub type Page = (Vec<Vec<String>>, Option<Next>);

/// Turns each device into its rows (none, one or several).
pub type RowsOf<'a> = dyn FnMut(&Device) -> Result<Vec<Vec<String>>> + 'a;

/// Reads devices in key order: at most `limit` after a device (tenant, controller id).
pub type Fetch<'a> = dyn FnMut(Option<(&str, &str)>, usize) -> Result<Vec<Device>> + 'a;

/// One page of a device list: unsorted pages continue after a device, sorted ones after a
/// number of rows.
pub fn page(
    store: &dyn Storage,
    p: &Paging,
    a: &Arrange,
    rows_of: &mut RowsOf<'_>,
) -> Result<Page> {
    page_from(&mut |after, n| store.devices_page(after, n), p, a, rows_of)
}

/// [`page`] over any reader of devices.
pub fn page_from(
    fetch: &mut Fetch<'_>,
    p: &Paging,
    a: &Arrange,
    rows_of: &mut RowsOf<'_>,
) -> Result<Page> {
    match a.sort {
        None => unsorted(fetch, p, a, rows_of),
        Some(col) => sorted(fetch, p, a, col, rows_of),
    }
}

/// Hands every device after `after` to `f`, in key order, reading them a chunk at a time,
/// until `f` answers `false` or the devices run out.
pub fn walk(
    fetch: &mut Fetch<'_>,
    mut after: Option<(String, String)>,
    f: &mut dyn FnMut(Device) -> Result<bool>,
) -> Result<()> {
    loop {
        let chunk = fetch(after.as_ref().map(|(t, c)| (t.as_str(), c.as_str())), CHUNK)?;
        let n = chunk.len();
        for d in chunk {
            after = Some((d.tenant.clone(), d.controller_id.clone()));
            if !f(d)? {
                return Ok(());
            }
        }
        if n < CHUNK {
            return Ok(());
        }
    }
}

fn unsorted(
    fetch: &mut Fetch<'_>,
    p: &Paging,
    a: &Arrange,
    rows_of: &mut RowsOf<'_>,
) -> Result<Page> {
    let mut out = Vec::new();
    let mut next = None;
    walk(fetch, p.after.clone(), &mut |d| {
        out.extend(rows_of(&d)?.into_iter().filter(|r| a.keeps(r)));
        if p.limit.is_some_and(|l| out.len() >= l) {
            next = Some(Next::After(d.tenant, d.controller_id));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok((out, next))
}

fn sorted(
    fetch: &mut Fetch<'_>,
    p: &Paging,
    a: &Arrange,
    col: usize,
    rows_of: &mut RowsOf<'_>,
) -> Result<Page> {
    let end = p.limit.map_or(usize::MAX, |l| p.offset.saturating_add(l));
    let mut best: Vec<Vec<String>> = Vec::new();
    let mut matched = 0usize;
    walk(fetch, None, &mut |d| {
        let rows: Vec<_> = rows_of(&d)?.into_iter().filter(|r| a.keeps(r)).collect();
        matched += rows.len();
        best.extend(rows);
        // Kept to the page's end and about one chunk more.
        if best.len() > end.saturating_add(CHUNK) {
            best.sort_by(|x, y| a.order(x, y, col));
            best.truncate(end);
        }
        Ok(true)
    })?;
    best.sort_by(|x, y| a.order(x, y, col));
    best.truncate(end);
    let rows: Vec<_> = best.into_iter().skip(p.offset).collect();
    let next = (end < matched).then_some(Next::Offset(end));
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::storage::SqliteStore;

    fn fleet(n: usize) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("dmmp.db")).unwrap();
        let devices: Vec<_> =
            (0..n).map(|i| ("DEFAULT".to_string(), format!("dev-{i:05}"), None)).collect();
        s.import_devices(&devices, 1).unwrap();
        (dir, s)
    }

    fn rows_of(d: &Device) -> Result<Vec<Vec<String>>> {
        let n: usize = d.controller_id[4..].parse().unwrap_or(0);
        Ok(vec![vec![d.controller_id.clone(), (n % 7).to_string()]])
    }

    #[test]
    fn unsorted_pages_cover_the_fleet_once_reading_little_more_than_a_page() {
        let (_d, s) = fleet(2_345);
        let mut read = 0usize;
        let mut seen = Vec::new();
        let mut paging = Paging { limit: Some(100), ..Default::default() };
        let mut pages = 0;
        loop {
            let before = read;
            let mut fetch = |after: Option<(&str, &str)>, n: usize| {
                let got = s.devices_page(after, n)?;
                read += got.len();
                Ok(got)
            };
            let (rows, next) =
                page_from(&mut fetch, &paging, &Arrange::default(), &mut rows_of).unwrap();
            assert!(read - before <= CHUNK, "a page of 100 read {} devices", read - before);
            seen.extend(rows.into_iter().map(|r| r[0].clone()));
            pages += 1;
            match next {
                Some(Next::After(t, c)) => paging.after = Some((t, c)),
                Some(Next::Offset(_)) => panic!("an unsorted page continues after a device"),
                None => break,
            }
        }
        assert_eq!(pages, 24);
        let want: Vec<_> = (0..2_345).map(|i| format!("dev-{i:05}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn sorted_and_filtered_pages_agree_with_sorting_everything() {
        let (_d, s) = fleet(1_234);
        let a = Arrange { filter: Some("DEV-001".into()), sort: Some(1), desc: true };
        let (mut all, _) = page(&s, &Paging::default(), &Arrange::default(), &mut rows_of).unwrap();
        a.apply(&mut all);
        assert_eq!(all.len(), 100);
        let mut got = Vec::new();
        let mut paging = Paging { limit: Some(30), ..Default::default() };
        loop {
            let (rows, next) = page(&s, &paging, &a, &mut rows_of).unwrap();
            assert!(rows.len() <= 30);
            got.extend(rows);
            match next {
                Some(Next::Offset(o)) => paging.offset = o,
                _ => break,
            }
        }
        assert_eq!(got, all);
        assert_eq!(got[0][1], "6");
    }
}
