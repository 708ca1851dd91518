//! A node's membership state in the ring file, and what it means for placement.
//!
//! Membership changes move nodes through them: a node waits as `joining` (owning nothing) until
//! a change adds it; while that change moves ranges (the ring is `moving`) it is a new owner in
//! the target placement; once the move is done it is `normal`. A node being removed is `leaving`
//! (or `dead`, gone for good) while its ranges move away, and off the ring after that.

use serde::{Deserialize, Serialize};

/// A node's membership state. Placement depends on it only through [`NodeState::owns_tokens`]:
/// a joining node owns no tokens until a ring change adds it, so it serves no keys; a leaving or
/// dead node keeps its tokens (and its keys) until a ring change removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Known to the ring but not placed yet: no tokens, no keys.
    Joining,
    /// A full member: owns its tokens.
    #[default]
    Normal,
    /// Being removed: still owns its tokens until the change that removes it.
    Leaving,
    /// Gone for good and awaiting replacement or removal: still owns its tokens until then.
    Dead,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NodeState {
    /// True when the node has tokens on the ring, that is unless it is still joining.
    pub fn owns_tokens(self) -> bool {
        self != NodeState::Joining
    }

    /// True when the node owns tokens in the target placement of a change in progress: normal
    /// nodes and the joining ones being added, not the leaving or dead ones being removed.
    pub fn in_target(self) -> bool {
        matches!(self, NodeState::Normal | NodeState::Joining)
    }

    /// True for the default state (kept out of serialized ring files).
    pub fn is_normal(&self) -> bool {
        *self == NodeState::Normal
    }

    /// The state as the ring file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Normal => "normal",
            NodeState::Leaving => "leaving",
            NodeState::Dead => "dead",
        }
    }
}
