//! The simulated runs' tokens: one secret (the spawned server of live mode gets it
//! too), tokens minted for the scenario's users with it.

use crate::net::SIM_EPOCH_MS;
use rtsync_protocol::auth::{Claims, mint};

/// The JWT secret of simulated (and `--spawn-server` live) runs.
pub const SECRET: &[u8] = b"rtsync-simulation-secret";

/// A token that does not expire within any run (ten years past the simulated epoch).
pub fn token(user: &str, workspace: &str) -> String {
    token_until(user, workspace, SIM_EPOCH_MS / 1000 + 10 * 365 * 86_400)
}

/// A token that expires at `exp_s` (seconds since the Unix epoch, on the server's clock).
pub fn token_until(user: &str, workspace: &str, exp_s: u64) -> String {
    mint(
        &Claims {
            sub: user.into(),
            ws: workspace.into(),
            exp: exp_s,
        },
        SECRET,
    )
}
