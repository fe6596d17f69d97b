//! The connection to the shared tracker: one Redis (`redis://`, `rediss://`), or a Redis
//! Cluster (`redis+cluster://HOST:PORT[,HOST:PORT…]`, `rediss+cluster://…`), whose client
//! follows `MOVED`/`ASK` redirections and a failover's new primaries by itself (the `redis`
//! crate's cluster support). Both connect lazily, so an edge starts with Redis down.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};

/// The scheme suffix that names a cluster: `redis+cluster://`, `rediss+cluster://`.
const CLUSTER: &str = "+cluster://";

/// Where the tracker is and how to connect to it.
#[derive(Clone)]
pub(crate) enum Target {
    /// One Redis (or a primary with replicas behind one address).
    One(redis::Client, ConnectionManagerConfig),
    /// A Redis Cluster, from any of its nodes.
    Cluster(ClusterClient, ClusterConfig),
}

/// A connection to either; cheap to clone (both multiplex one connection per node).
#[derive(Clone)]
pub(crate) enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The nodes a cluster URL names, each as a Redis URL (`redis://[USER:PASSWORD@]HOST:PORT`),
/// or `None` when `url` is not a cluster URL.
///
/// # Errors
/// A cluster URL without nodes, or with a path (a cluster has one database).
pub(crate) fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, &'static str>> {
    let (scheme, rest) = url.split_once(CLUSTER)?;
    if scheme != "redis" && scheme != "rediss" {
        return Some(Err("a cluster URL is redis+cluster://… or rediss+cluster://…"));
    }
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    if hosts.contains('/') {
        return Some(Err("a cluster has one database: no /DB in a cluster URL"));
    }
    let nodes: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}://{auth}{h}")).collect();
    if nodes.is_empty() {
        return Some(Err("a cluster URL names at least one node: redis+cluster://HOST:PORT[,HOST:PORT…]"));
    }
    Some(Ok(nodes))
}

/// A URL error in the client's own error type, so that both kinds of URL fail alike.
fn invalid(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, why))
}

impl Target {
    /// The target `url` names; `roots` (PEM) replace the system's roots for TLS; every call is
    /// bounded by `timeout`.
    pub(crate) fn new(url: &str, roots: Option<Vec<u8>>, timeout: Duration) -> RedisResult<Self> {
        let certs = |pem| TlsCertificates { client_tls: None, root_cert: Some(pem) };
        if let Some(nodes) = cluster_nodes(url) {
            let nodes = nodes.map_err(invalid)?;
            let mut b = ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A redirection or a node gone mid-failover is retried at once, within the
                // caller's time limit; `Health` paces the rest.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if let Some(pem) = roots {
                b = b.certs(certs(pem));
            }
            let cfg = ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
            return Ok(Self::Cluster(b.build()?, cfg));
        }
        let client = match roots {
            Some(pem) => redis::Client::build_with_tls(url, certs(pem))?,
            None => redis::Client::open(url)?,
        };
        // One reconnect attempt per failed call: the caller's time limit and `Health` pace them.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0)
            .set_max_delay(super::Health::REST.max(timeout));
        Ok(Self::One(client, cfg))
    }

    /// Whether this is a cluster (its keys are bucketed, keys.rs).
    pub(crate) const fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(..))
    }

    /// A new connection, made in the background: it fails at its first call while the server
    /// is away, and recovers by itself.
    pub(crate) fn connect(&self) -> RedisResult<Conn> {
        match self {
            Self::One(client, cfg) => client.get_connection_manager_lazy(cfg.clone()).map(Conn::One),
            Self::Cluster(client, cfg) => {
                Ok(Conn::Cluster(client.get_pending_async_connection_with_config(cfg.clone())))
            }
        }
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::One(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::One(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::One(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").unwrap().unwrap(),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://edge:s3cret@r1:6380,r2:6380").unwrap().unwrap(),
            ["rediss://edge:s3cret@r1:6380", "rediss://edge:s3cret@r2:6380"]
        );
        assert!(cluster_nodes("redis+cluster://").unwrap().is_err());
        assert!(cluster_nodes("redis+cluster://h:1/2").unwrap().is_err());
        assert!(cluster_nodes("http+cluster://h:1").unwrap().is_err());
    }
}
