//! The etcd implementation of [`Store`]: the `etcd-client` crate (gRPC, async) on a small tokio
//! runtime owned by this adapter, so the rest of repltool stays synchronous (threads, not
//! async). One worker thread runs the lease keep-alives in the background; every call from the
//! caller's thread is bounded by a timeout. Requests require an etcd leader, so a member cut
//! off from its quorum answers with an error at once instead of stale data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};

use super::coord::{Entry, Store};

pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    /// One client per endpoint: a request that cannot reach a member (refused, no leader
    /// there) is sent to the next one; the one that answered is tried first next time.
    clients: Vec<(String, Client)>,
    current: usize,
    timeout: Duration,
    keepers: HashMap<i64, tokio::task::JoinHandle<()>>,
}

/// The request never reached a member that could serve it (nothing listens, no route, that
/// member has no leader): safe to send to another member.
fn unreached(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        // gRPC UNAVAILABLE (14): the connection failed, or that member has no leader.
        etcd_client::Error::GRpcStatus(s) => i32::from(s.code()) == 14,
        _ => false,
    }
}

impl EtcdStore {
    /// Clients for `endpoints`; `timeout` bounds every call to one member.
    pub fn connect(endpoints: &[String], timeout: Duration) -> Result<EtcdStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("repltool-etcd")
            .enable_all()
            .build()
            .map_err(|e| anyhow!("cannot start the etcd client's runtime: {e}"))?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(2), timeout);
        let mut clients = Vec::new();
        for ep in endpoints {
            // Lazy: nothing is contacted until the first request.
            let c = rt
                .block_on(async {
                    tokio::time::timeout(timeout, Client::connect([ep], Some(opts.clone()))).await
                })
                .map_err(|_| anyhow!("etcd {ep}: no answer within {timeout:?}"))?
                .map_err(|e| anyhow!("etcd {ep}: {e}"))?;
            clients.push((ep.clone(), c));
        }
        if clients.is_empty() {
            bail!("no etcd endpoints");
        }
        Ok(EtcdStore {
            rt,
            clients,
            current: 0,
            timeout,
            keepers: HashMap::new(),
        })
    }

    /// `f` on the member that answered last, then on the others in turn while the request
    /// cannot reach one; after a timeout too when `f` is safe to repeat (a read, a plain put),
    /// never for a compare-and-swap (it may have been applied).
    fn call<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_with(what, true, f)
    }

    fn call_once<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_with(what, false, f)
    }

    fn call_with<T, F, Fut>(&mut self, what: &str, repeatable: bool, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let t = self.timeout;
        let n = self.clients.len();
        let mut errors = Vec::new();
        for k in 0..n {
            let i = (self.current + k) % n;
            let (ep, c) = &self.clients[i];
            let fut = f(c.clone());
            match self
                .rt
                .block_on(async { tokio::time::timeout(t, fut).await })
            {
                Ok(Ok(v)) => {
                    self.current = i;
                    return Ok(v);
                }
                Ok(Err(e)) if unreached(&e) => errors.push(format!("{ep}: {e}")),
                Ok(Err(e)) => bail!("etcd {ep}: {what}: {e}"),
                Err(_) if repeatable => errors.push(format!("{ep}: no answer within {t:?}")),
                Err(_) => {
                    bail!("etcd {ep}: {what}: no answer within {t:?} (etcd down, or no quorum)")
                }
            }
        }
        bail!(
            "etcd: {what}: no member could serve it (etcd down, or no quorum): {}",
            errors.join("; ")
        )
    }
}

fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        value: kv.value().to_vec(),
        mod_rev: kv.mod_revision(),
        create_rev: kv.create_revision(),
        lease: kv.lease(),
    }
}

impl Store for EtcdStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>> {
        let r = self.call(&format!("get {key}"), |mut c| async move {
            c.get(key, None).await
        })?;
        Ok(r.kvs().first().map(entry))
    }

    fn range(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let r = self.call(&format!("get {prefix}*"), |mut c| async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        Ok(r.kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), entry(kv)))
            .collect())
    }

    fn put_if(&mut self, key: &str, value: &[u8], expect: i64, lease: i64) -> Result<bool> {
        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expect)])
            .and_then([TxnOp::put(key, value, opts)]);
        let r = self.call_once(&format!("compare-and-swap {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        Ok(r.succeeded())
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.call(&format!("put {key}"), |mut c| async move {
            c.put(key, value, None).await
        })
        .map(|_| ())
    }

    fn delete_if(&mut self, key: &str, expect: i64) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expect)])
            .and_then([TxnOp::delete(key, None)]);
        let r = self.call_once(&format!("delete {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        Ok(r.succeeded())
    }

    fn grant(&mut self, ttl: Duration) -> Result<(i64, Arc<AtomicBool>)> {
        let secs = ttl.as_secs().max(2) as i64;
        let r = self.call("lease grant", |mut c| async move {
            c.lease_grant(secs, None).await
        })?;
        let id = r.id();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let clients: Vec<Client> = self.clients.iter().map(|(_, c)| c.clone()).collect();
        let first = self.current;
        let ttl = Duration::from_secs(r.ttl().max(1) as u64);
        let period = (ttl / 3).max(Duration::from_millis(300));
        // Keep the lease alive every third of its TTL; raise the flag when etcd says it is
        // gone, or when no keep-alive succeeded for a whole TTL (the lease may have expired).
        let h = self.rt.spawn(async move {
            let mut last_ok = Instant::now();
            let mut pair = None;
            let mut i = first;
            loop {
                if pair.is_none() {
                    // A member that cannot keep it alive: the next one.
                    let mut client = clients[i % clients.len()].clone();
                    i += 1;
                    if let Ok(Ok(p)) =
                        tokio::time::timeout(period, client.lease_keep_alive(id)).await
                    {
                        pair = Some(p);
                    }
                }
                if let Some((keeper, stream)) = pair.as_mut() {
                    let got = tokio::time::timeout(period, async {
                        keeper.keep_alive().await?;
                        stream.message().await
                    })
                    .await;
                    match got {
                        Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                        Ok(Ok(Some(_))) => {
                            flag.store(true, Ordering::SeqCst);
                            return;
                        }
                        _ => pair = None,
                    }
                }
                if last_ok.elapsed() >= ttl {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(period).await;
            }
        });
        self.keepers.insert(id, h);
        Ok((id, lost))
    }

    fn revoke(&mut self, lease: i64) -> Result<()> {
        if let Some(h) = self.keepers.remove(&lease) {
            h.abort();
        }
        self.call("lease revoke", |mut c| async move {
            c.lease_revoke(lease).await
        })
        .map(|_| ())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for (_, h) in self.keepers.drain() {
            h.abort();
        }
    }
}
