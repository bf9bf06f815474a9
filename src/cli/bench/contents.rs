//! `profile-vault bench --contents-report`: what the contents report costs a save. The same
//! profile (the synthetic one, plus real SQLite cookie, history and login databases) is saved
//! alternately with and without the report, `--rounds` times each, in one run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use profile_vault::vault::Base;
use profile_vault::{Keyring, NoProgress, Vault};
use rand::RngCore;

use super::args::Args;
use super::common::bench_addr;
use crate::cli::Ctx;

/// Real Chromium-shaped databases: 3,000 cookies on 300 sites, 50,000 history entries,
/// 200 saved logins.
fn add_databases(root: &Path) -> anyhow::Result<()> {
    let net = root.join("Default/Network");
    std::fs::create_dir_all(&net)?;
    let c = rusqlite::Connection::open(net.join("Cookies"))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS cookies (host_key TEXT, name TEXT, value TEXT, encrypted_value BLOB, path TEXT, expires_utc INTEGER, is_persistent INTEGER, has_expires INTEGER);
         DELETE FROM cookies;",
    )?;
    let tx = c.unchecked_transaction()?;
    for i in 0..3000 {
        tx.execute(
            "INSERT INTO cookies VALUES (?1, ?2, '', ?3, '/', 0, ?4, ?4)",
            rusqlite::params![
                format!(".site{}.example", i % 300),
                format!("c{i}"),
                b"v10xxxxxxxxxxxxxxxx".to_vec(),
                i % 4 != 0
            ],
        )?;
    }
    tx.commit()?;
    let h = rusqlite::Connection::open(root.join("Default/History"))?;
    h.execute_batch("CREATE TABLE IF NOT EXISTS urls (id INTEGER PRIMARY KEY, url TEXT, title TEXT, visit_count INTEGER); DELETE FROM urls;")?;
    let tx = h.unchecked_transaction()?;
    for i in 0..50_000 {
        tx.execute(
            "INSERT INTO urls (url, title, visit_count) VALUES (?1, ?2, 1)",
            rusqlite::params![
                format!("https://site{}.example/page/{i}", i % 500),
                format!("Page {i}")
            ],
        )?;
    }
    tx.commit()?;
    let l = rusqlite::Connection::open(root.join("Default/Login Data"))?;
    l.execute_batch("CREATE TABLE IF NOT EXISTS logins (origin_url TEXT, signon_realm TEXT, username_value TEXT, password_value BLOB); DELETE FROM logins;")?;
    for i in 0..200 {
        l.execute(
            "INSERT INTO logins VALUES (?1, ?1, 'user', x'00')",
            rusqlite::params![format!("https://login{i}.example/")],
        )?;
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the measurement on the generated profile `src`.
pub async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    let s = src.to_path_buf();
    tokio::task::spawn_blocking(move || add_databases(&s)).await??;
    let store_dir = bench_dir.join(format!("store-{}", uuid::Uuid::new_v4().simple()));
    let url = a.bench_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            std::path::absolute(&store_dir)
                .unwrap_or(store_dir.clone())
                .display()
        )
    });
    let store = profile_vault::store::from_url(&url, &ctx.cfg.file.s3).await?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let ring = Arc::new(Keyring::from_keys(vec![("bench".into(), key)], "bench")?);
    let vault_with = |report: bool| -> anyhow::Result<Vault> {
        let mut opts = ctx.cfg.vault_options();
        opts.spool_dir = bench_dir.join("spool");
        opts.contents_report = report;
        Ok(Vault::new(store.clone(), ring.clone(), opts)?)
    };
    let (with, without) = (vault_with(true)?, vault_with(false)?);
    let profile = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let rounds = a.rounds.max(1);
    for i in 0..rounds * 2 {
        // Alternate, so drift on a shared machine hits both alike.
        let (v, out) = if i % 2 == 0 {
            (&with, &mut on)
        } else {
            (&without, &mut off)
        };
        let t = Instant::now();
        v.save(
            &bench_addr(&profile)?,
            src,
            Base::Current,
            Arc::new(NoProgress),
        )
        .await?;
        out.push(t.elapsed().as_secs_f64());
    }
    let report = with
        .meta(&bench_addr(&profile)?, None)
        .await?
        .and_then(|(_, m)| m.contents);
    with.delete(&bench_addr(&profile)?).await?;
    let _ = std::fs::remove_dir_all(&store_dir);
    if !a.keep_profile {
        let _ = std::fs::remove_dir_all(src);
    }
    let (m_on, m_off) = (median(&mut on), median(&mut off));
    let overhead = (m_on / m_off - 1.0) * 100.0;
    let r = serde_json::json!({"rounds": rounds, "save_seconds_with_report": m_on, "save_seconds_without": m_off,
        "overhead_percent": overhead, "report_sites": report.as_ref().map(|c| c.cookies.len()),
        "report_history_entries": report.as_ref().and_then(|c| c.history_entries)});
    ctx.print(&r, || {
        format!(
            "save of a {} MB profile, median of {rounds}: {m_on:.3} s with the contents report, {m_off:.3} s without: {overhead:+.1} %",
            a.size_mb
        )
    });
    Ok(())
}
