//! What the writer has decided but the roll has not applied yet, layered over the roll.
//!
//! ```text
//!   job layer   (one request: a batch is all or nothing, so it stages apart)
//!     └ group layer   (every job of this group that was accepted so far)
//!         └ in flight   (groups handed to the committer, newest first, not yet in the roll)
//!             └ Roll    (applied, under the read lock)
//! ```
//!
//! A lookup falls through the layers top-down; an accepted job's layer is absorbed into the
//! group's, a refused one's is dropped, and a group's layer stays in flight until the roll has
//! applied its last event. Every layer holds absolute values (a household's whole state and
//! version, a person's household), never deltas, so a layer that the roll has already caught
//! up with says the same as the roll: the writer may drop it a little late without harm.
//! Nothing here touches the roll or the disk.

// The same fast, per-process-seeded hash as the roll's maps (see `projection`).
use foldhash::HashMap;
use std::sync::Arc;

use crate::domain::{HouseholdId, HouseholdState, IdNumber, PersonDirectory};
use crate::error::Error;
use crate::projection::Roll;

/// What the writer needs to know about the register while it decides.
pub(super) trait View {
    /// A household's state and version. Shared, not copied: a layer's states are read by the
    /// commands after it and handed to the roll with their events (`projection::Decided`).
    fn household(&self, id: &HouseholdId) -> Result<Option<(Arc<HouseholdState>, u64)>, Error>;
    /// The household holding `person`, if any.
    fn person(&self, person: &IdNumber) -> Option<HouseholdId>;
    /// The seq of the event that `request_id` produced, if any.
    fn request(&self, request_id: &str) -> Option<u64>;
    /// The seqs of a household's events in the roll (staged and in-flight ones are not).
    fn committed_seqs(&self, id: &HouseholdId) -> Vec<u64>;
}

impl View for Roll {
    fn household(&self, id: &HouseholdId) -> Result<Option<(Arc<HouseholdState>, u64)>, Error> {
        Roll::household(self, id)
            .map(|entry| Ok((Arc::new(entry.state.unpack()?), entry.version())))
            .transpose()
    }

    fn person(&self, person: &IdNumber) -> Option<HouseholdId> {
        self.household_of(person)
    }

    fn request(&self, request_id: &str) -> Option<u64> {
        Roll::request(self, request_id)
    }

    fn committed_seqs(&self, id: &HouseholdId) -> Vec<u64> {
        Roll::household(self, id).map_or_else(Vec::new, |entry| entry.seqs.to_vec())
    }
}

/// Changes staged over a base view.
#[derive(Default)]
pub(super) struct Changes {
    households: HashMap<HouseholdId, (Arc<HouseholdState>, u64)>,
    /// `None`: the person was released by a staged change.
    persons: HashMap<IdNumber, Option<HouseholdId>>,
    requests: HashMap<String, u64>,
}

/// Groups the committer has not applied to the roll yet, oldest first, each with its last
/// seq, over the roll.
pub(super) struct InFlight<'a> {
    pub roll: &'a Roll,
    pub groups: &'a std::collections::VecDeque<(u64, Changes)>,
}

impl<'a> InFlight<'a> {
    /// The newest in-flight answer to `lookup`, if any group has one.
    fn newest<T>(&self, lookup: impl Fn(&'a Changes) -> Option<T>) -> Option<T> {
        self.groups
            .iter()
            .rev()
            .find_map(|(_, changes)| lookup(changes))
    }
}

impl View for InFlight<'_> {
    fn household(&self, id: &HouseholdId) -> Result<Option<(Arc<HouseholdState>, u64)>, Error> {
        match self.newest(|c| c.households.get(id)) {
            Some(staged) => Ok(Some(staged.clone())),
            None => View::household(self.roll, id),
        }
    }

    fn person(&self, person: &IdNumber) -> Option<HouseholdId> {
        match self.newest(|c| c.persons.get(person)) {
            Some(staged) => staged.clone(),
            None => View::person(self.roll, person),
        }
    }

    fn request(&self, request_id: &str) -> Option<u64> {
        self.newest(|c| c.requests.get(request_id).copied())
            .or_else(|| View::request(self.roll, request_id))
    }

    fn committed_seqs(&self, id: &HouseholdId) -> Vec<u64> {
        View::committed_seqs(self.roll, id)
    }
}

pub(super) struct Staged<'a> {
    base: &'a dyn View,
    changes: Changes,
}

impl<'a> Staged<'a> {
    pub fn over(base: &'a dyn View) -> Self {
        Self::sized(base, 0)
    }

    /// A layer over `base` for `commands` commands, its tables sized once for a batch of them:
    /// grown by doubling through a batch of 1,000, they rehashed every entry ~10 times. (A
    /// single command's layer allocates only what it stages.)
    pub fn sized(base: &'a dyn View, commands: usize) -> Self {
        let mut changes = Changes::default();
        if commands > 1 {
            changes.households.reserve(commands);
            changes.persons.reserve(commands);
        }
        Self { base, changes }
    }

    /// Stages an accepted event's effect: the household's new state and version, the people it
    /// holds or released, and its request_id.
    pub fn record(
        &mut self,
        id: &HouseholdId,
        before: Option<&HouseholdState>,
        after: Arc<HouseholdState>,
        version: u64,
        request: Option<(&str, u64)>,
    ) {
        // Only the people the event moved in or out: those it leaves in place are the
        // household's in the layers below already (most events change no membership, and
        // rewriting every member of every household touched was ~2% of a batch).
        let before_members = || before.into_iter().flat_map(HouseholdState::active_members);
        for person in before_members() {
            if !after.active_members().any(|kept| kept == person) {
                self.changes.persons.insert(*person, None);
            }
        }
        for person in after.active_members() {
            if !before_members().any(|was| was == person) {
                self.changes.persons.insert(*person, Some(id.clone()));
            }
        }
        if let Some((request_id, seq)) = request {
            self.changes.requests.insert(request_id.to_owned(), seq);
        }
        self.changes.households.insert(id.clone(), (after, version));
    }

    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// Takes in the changes of a layer that was staged over this one. Into an empty layer (a
    /// group's first job, often its only one) they move whole: re-inserting a batch's thousands
    /// of entries one by one hashed each key a second time and grew the tables by doubling.
    pub fn absorb(&mut self, changes: Changes) {
        fn take_in<K: Eq + std::hash::Hash, V>(into: &mut HashMap<K, V>, from: HashMap<K, V>) {
            if into.is_empty() {
                *into = from;
            } else {
                into.extend(from);
            }
        }
        take_in(&mut self.changes.households, changes.households);
        take_in(&mut self.changes.persons, changes.persons);
        take_in(&mut self.changes.requests, changes.requests);
    }
}

impl View for Staged<'_> {
    fn household(&self, id: &HouseholdId) -> Result<Option<(Arc<HouseholdState>, u64)>, Error> {
        match self.changes.households.get(id) {
            Some(staged) => Ok(Some(staged.clone())),
            None => self.base.household(id),
        }
    }

    fn person(&self, person: &IdNumber) -> Option<HouseholdId> {
        match self.changes.persons.get(person) {
            Some(staged) => staged.clone(),
            None => self.base.person(person),
        }
    }

    fn request(&self, request_id: &str) -> Option<u64> {
        match self.changes.requests.get(request_id) {
            Some(seq) => Some(*seq),
            None => self.base.request(request_id),
        }
    }

    fn committed_seqs(&self, id: &HouseholdId) -> Vec<u64> {
        self.base.committed_seqs(id)
    }
}

impl PersonDirectory for Staged<'_> {
    fn household_of(&self, person: &IdNumber) -> Option<HouseholdId> {
        self.person(person)
    }
}
