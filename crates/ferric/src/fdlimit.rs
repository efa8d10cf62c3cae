//! The process's open-file limit and the API's connection limit under it
//! (issue 17, item 2).
//!
//! `ferric serve` raises the soft `RLIMIT_NOFILE` to the hard limit at start
//! (systemd and shells often leave the soft one at 1024), then serves at most
//! `soft limit − reserve` connections, so an `accept` never fails with
//! EMFILE: the reserve keeps room for the database pool, outgoing BMC and
//! agent connections, ipmitool's password files and the process's own
//! files.

use tracing::{info, warn};

/// File descriptors kept out of the API's share, besides the database pool.
pub const FD_RESERVE: u64 = 128;

/// Raise the soft open-file limit to the hard one; the soft limit in force
/// after (unchanged, with a warning, when it cannot be raised).
pub fn raise_nofile_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            if let Some((old_soft, hard)) = before {
                if soft != old_soft {
                    info!(
                        from = old_soft,
                        to = soft,
                        hard,
                        "raised the open-file limit"
                    );
                }
            }
            soft
        }
        Err(e) => {
            let soft = before.map_or(1024, |(soft, _)| soft);
            warn!(error.message = %e, soft, "cannot raise the open-file limit");
            soft
        }
    }
}

/// The connection limit to serve with: `configured`, lowered (with a
/// warning) below `nofile` minus the reserve and the database pool; at
/// least 1.
pub fn max_connections(configured: usize, nofile: u64, database_pool: u32) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE + u64::from(database_pool));
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if configured > room {
        warn!(
            configured,
            effective = room,
            open_file_limit = nofile,
            "api.max_connections lowered below the open-file limit \
             ({nofile} − {FD_RESERVE} reserved − {database_pool} database connections)"
        );
        room
    } else {
        configured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_stays_below_the_open_file_limit() {
        assert_eq!(max_connections(4096, 1024, 8), 1024 - 128 - 8);
        assert_eq!(max_connections(100, 1024, 8), 100);
        assert_eq!(max_connections(4096, 10, 8), 1);
        assert_eq!(max_connections(4096, 1_048_576, 8), 4096);
    }
}
