//! One consumer group under the classic protocol, as Kafka's coordinator
//! runs it: members join (with the MEMBER_ID_REQUIRED round trip), a
//! rebalance waits for every known member or its deadline, the leader's
//! assignment is handed to every member at SyncGroup, heartbeats keep
//! sessions alive, and static members (KIP-345) rejoin without a rebalance.
//!
//! Pure state and time: the caller passes `now` and gets replies through
//! oneshot channels, so this file has no I/O and is tested on its own.

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(6_000);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(1_800_000);

/// Kafka's group.max.size: members plus ids handed out with
/// MEMBER_ID_REQUIRED and not yet used. Kafka's default is unbounded; a
/// bound here is what keeps JoinGroup spam (each empty-id JoinGroup mints
/// an id) from growing a group's memory without limit. A thousand is far
/// above any consumer group that could get a partition each.
pub const GROUP_MAX_SIZE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader rejoining a stable group keeps the assignment.
    pub skip_assignment: bool,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: error.code(),
            generation: -1,
            member_id: member_id.into(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> Self {
        SyncResult {
            error: error.code(),
            ..Default::default()
        }
    }
}

/// A JoinGroup as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ asks unknown members to rejoin with an assigned id.
    pub requires_known_member_id: bool,
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    joined_at: u64,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    /// This member's metadata for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// Either an answer now, or one that arrives when the rebalance moves on.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined, with when
    /// each expires: the session timeout its JoinGroup asked for, as in
    /// Kafka (KIP-394), counted from when it was handed out.
    pending: BTreeMap<String, Instant>,
    /// Members plus pending ids allowed (see `GROUP_MAX_SIZE`).
    max_size: usize,
    join_counter: u64,
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits this long for others.
    initial_delay_until: Option<Instant>,
    rebalance_started: Option<Instant>,
    sync_deadline: Option<Instant>,
    initial_delay: Duration,
    /// When the group last became empty (offsets retention counts from it).
    pub empty_since: Option<Instant>,
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str, initial_delay: Duration, now: Instant) -> Group {
        Group {
            id: id.into(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            max_size: GROUP_MAX_SIZE,
            join_counter: 0,
            rebalance_deadline: None,
            initial_delay_until: None,
            rebalance_started: None,
            sync_deadline: None,
            initial_delay,
            empty_since: Some(now),
        }
    }

    /// The same group with another size cap (a setting could use it).
    #[cfg(test)]
    pub fn with_max_size(mut self, max_size: usize) -> Group {
        self.max_size = max_size;
        self
    }

    /// Ids handed out with MEMBER_ID_REQUIRED and not yet swept.
    #[cfg(test)]
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn expire_pending(&mut self, now: Instant) {
        self.pending.retain(|_, expires| now < *expires);
    }

    /// Whether one more member (or pending id) fits. Counting pending ids
    /// (Kafka counts members only) is what bounds JoinGroup spam, which
    /// creates pending ids and never members.
    fn has_room(&mut self, now: Instant) -> bool {
        if self.members.len() + self.pending.len() < self.max_size {
            return true;
        }
        // Only when full: a sweep is O(pending), bounded by the cap.
        self.expire_pending(now);
        self.members.len() + self.pending.len() < self.max_size
    }

    fn member_by_instance(&self, instance: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }

    pub fn join(&mut self, request: JoinRequest, now: Instant) -> Reply<JoinResult> {
        if request.session_timeout < MIN_SESSION_TIMEOUT || request.session_timeout > MAX_SESSION_TIMEOUT {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &request.member_id,
            ));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &request.member_id,
            ));
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            let returning_instance = request
                .instance_id
                .as_deref()
                .is_some_and(|i| self.member_by_instance(i).is_some());
            if !returning_instance && !self.has_room(now) {
                // Kafka answers with an empty member id.
                return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
            }
            if let Some(instance) = &request.instance_id {
                return self.join_static_unknown_id(request.clone(), instance.clone(), now);
            }
            member_id = new_member_id(&request.client_id);
            if request.requires_known_member_id {
                self.pending
                    .insert(member_id.clone(), now + request.session_timeout);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &member_id));
            }
        } else if let Some(instance) = &request.instance_id {
            if let Some(current) = self.member_by_instance(instance) {
                if current != member_id {
                    return Reply::Now(JoinResult::error(ResponseError::FencedInstanceId, &member_id));
                }
            }
        }
        let known = self.members.contains_key(&member_id);
        // A pending id past its expiry (not yet swept by `tick`) is unknown.
        let pending = self
            .pending
            .remove(&member_id)
            .is_some_and(|expires| now < expires);
        if !known && !pending && !request.member_id.is_empty() {
            return Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, &member_id));
        }
        if !self.supports_excluding(&member_id, &request.protocol_type, &request.protocols) {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }
        let (tx, rx) = oneshot::channel();
        let unchanged = known
            && self
                .members
                .get(&member_id)
                .is_some_and(|m| m.protocols == request.protocols);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        self.upsert_member(&member_id, &request, now, Some(tx));
        if self.state == GroupState::Stable && unchanged && !is_leader {
            // A follower rejoining with the same metadata: no rebalance.
            let waiter = self
                .members
                .get_mut(&member_id)
                .and_then(|m| m.join_waiter.take());
            let result = self.join_result_for(&member_id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(result);
            }
            return Reply::Later(rx);
        }
        self.prepare_rebalance(now, !known);
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// Whether the other members (not `member_id`) accept this protocol
    /// type and share at least one of `protocols`.
    fn supports_excluding(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        let others = self.members.values().filter(|m| m.id != member_id).count();
        if others > 0 && self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.id != member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// A static member (group.instance.id) joining with no member id: a
    /// known instance gets a fresh id replacing the old one; if nothing
    /// changed in a stable group it keeps its assignment, no rebalance.
    fn join_static_unknown_id(
        &mut self,
        request: JoinRequest,
        instance: String,
        now: Instant,
    ) -> Reply<JoinResult> {
        let new_id = new_member_id(&instance);
        let Some(old_id) = self.member_by_instance(&instance).map(str::to_string) else {
            if !self.supports_excluding("", &request.protocol_type, &request.protocols) {
                return Reply::Now(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &new_id,
                ));
            }
            let (tx, rx) = oneshot::channel();
            self.upsert_member(&new_id, &request, now, Some(tx));
            self.prepare_rebalance(now, true);
            self.maybe_complete_join(now);
            return Reply::Later(rx);
        };
        let Some(mut old) = self.members.remove(&old_id) else {
            return Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, &new_id));
        };
        if let Some(waiter) = old.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(waiter) = old.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = old.protocols == request.protocols;
        old.id = new_id.clone();
        old.last_heartbeat = now;
        self.members.insert(new_id.clone(), old);
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged {
            let mut result = self.join_result_for(&new_id);
            result.skip_assignment = was_leader;
            return Reply::Now(result);
        }
        let (tx, rx) = oneshot::channel();
        self.upsert_member(&new_id, &request, now, Some(tx));
        self.prepare_rebalance(now, false);
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn upsert_member(
        &mut self,
        id: &str,
        r: &JoinRequest,
        now: Instant,
        waiter: Option<oneshot::Sender<JoinResult>>,
    ) {
        self.join_counter += 1;
        let order = self.join_counter;
        let member = self.members.entry(id.to_string()).or_insert_with(|| Member {
            id: id.to_string(),
            instance_id: r.instance_id.clone(),
            client_id: r.client_id.clone(),
            client_host: r.client_host.clone(),
            session_timeout: r.session_timeout,
            rebalance_timeout: r.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            joined_at: order,
            last_heartbeat: now,
            join_waiter: None,
            sync_waiter: None,
        });
        member.protocols = r.protocols.clone();
        member.session_timeout = r.session_timeout;
        member.rebalance_timeout = r.rebalance_timeout;
        member.client_id = r.client_id.clone();
        member.client_host = r.client_host.clone();
        member.last_heartbeat = now;
        if let Some(old) = std::mem::replace(&mut member.join_waiter, waiter) {
            let _ = old.send(JoinResult::error(ResponseError::UnknownMemberId, id));
        }
        // The first member of an empty group sets its type (an empty
        // group keeps the last one only to be listed by it).
        if self.protocol_type.is_none() || self.members.len() == 1 {
            self.protocol_type = Some(r.protocol_type.clone());
        }
        self.empty_since = None;
    }

    /// Moves to PreparingRebalance (if not already), telling members
    /// waiting in SyncGroup to rejoin.
    fn prepare_rebalance(&mut self, now: Instant, new_member: bool) {
        let max_rebalance = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        match self.state {
            GroupState::PreparingRebalance => {
                // New members extend the initial delay, up to the rebalance timeout.
                if let (true, Some(until), Some(started)) =
                    (new_member, self.initial_delay_until, self.rebalance_started)
                {
                    self.initial_delay_until =
                        Some((now + self.initial_delay).min(started + max_rebalance).max(until));
                }
            }
            state => {
                for member in self.members.values_mut() {
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncResult::error(ResponseError::RebalanceInProgress));
                    }
                }
                self.initial_delay_until = (state == GroupState::Empty && !self.initial_delay.is_zero())
                    .then(|| now + self.initial_delay.min(max_rebalance));
                self.rebalance_started = Some(now);
                self.rebalance_deadline = Some(now + max_rebalance);
                self.sync_deadline = None;
                self.state = GroupState::PreparingRebalance;
            }
        }
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let everyone_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|until| now >= until);
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        if (everyone_joined && delay_over) || deadline_passed {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out.
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            self.members.remove(&id);
        }
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty(now);
            return;
        }
        self.protocol = self.choose_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.joined_at)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let max_session = self
            .members
            .values()
            .map(|m| m.rebalance_timeout.max(m.session_timeout))
            .max()
            .unwrap_or_default();
        self.sync_deadline = Some(now + max_session);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.last_heartbeat = now;
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    /// Every member votes for its most preferred protocol that all support.
    fn choose_protocol(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .map(|(name, _)| name.as_str())
                .find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                });
            if let Some(name) = choice {
                *votes.entry(name).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map(|(name, _)| name.to_string())
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            let mut ordered: Vec<&Member> = self.members.values().collect();
            ordered.sort_by_key(|m| m.joined_at);
            ordered
                .into_iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata(self.protocol.as_deref()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.into(),
            members,
            skip_assignment: false,
        }
    }

    fn become_empty(&mut self, now: Instant) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol = None;
        // Kept, as Kafka keeps it: an empty consumer group is still listed
        // as a consumer group, not as a simple one.
        self.sync_deadline = None;
        self.empty_since = Some(now);
    }

    /// Checks a member's identity and generation, as every request after
    /// JoinGroup must pass.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.member_by_instance(instance) {
                if current != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncResult> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(SyncResult::error(e));
        }
        match self.state {
            GroupState::Empty => Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => Reply::Now(self.sync_result_for(member_id)),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.last_heartbeat = now;
                    member.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = given.remove(&member.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let result = self.sync_result_for(&id);
                        if let Some(waiter) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                            let _ = waiter.send(result);
                        }
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    fn sync_result_for(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: 0,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether an OffsetCommit from this member may proceed: simple
    /// commits (generation -1, no member) only while the group is empty;
    /// members may commit in Stable and, with their old generation, while a
    /// rebalance is being prepared (they commit before rejoining).
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() {
            return if self.state == GroupState::Empty {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        if self.state == GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation)?;
        match self.state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// TxnOffsetCommit (v3+, KIP-447) names the consumer's member and
    /// generation so a zombie's transaction cannot commit offsets for
    /// partitions it no longer owns. Unlike OffsetCommit, the group's
    /// state is not enforced, and a request naming no member is allowed.
    pub fn check_txn_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let named = generation >= 0 || !member_id.is_empty() || instance_id.is_some();
        if !named || (generation < 0 && self.state == GroupState::Empty) {
            return Ok(());
        }
        self.check_member(member_id, instance_id, generation)
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return e.code();
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// LeaveGroup for one member (by id, or by instance id when the id is
    /// empty). Returns the error for that member.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => match self.member_by_instance(instance) {
                Some(id) => id.to_string(),
                None => return ResponseError::UnknownMemberId.code(),
            },
            _ => member_id.to_string(),
        };
        if let Some(instance) = instance_id {
            if self
                .member_by_instance(instance)
                .is_some_and(|current| current != id)
            {
                return ResponseError::FencedInstanceId.code();
            }
        }
        if !self.remove_member(&id, now) {
            return ResponseError::UnknownMemberId.code();
        }
        0
    }

    /// Removes a member and rebalances the rest (or empties the group).
    fn remove_member(&mut self, id: &str, now: Instant) -> bool {
        let Some(mut member) = self.members.remove(id) else {
            return false;
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if self.members.is_empty() {
            self.generation += 1;
            self.become_empty(now);
        } else {
            self.prepare_rebalance(now, false);
            self.maybe_complete_join(now);
        }
        true
    }

    /// Whether the coordinator may drop this group from memory: it is empty
    /// and no member id handed out with MEMBER_ID_REQUIRED is still waiting
    /// to be used (forgetting it would answer that member's rejoin with
    /// UNKNOWN_MEMBER_ID).
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty && self.pending.is_empty()
    }

    /// The latest a JoinGroup or SyncGroup waiting now is answered (by
    /// `tick` at its rebalance or sync deadline), if one can be waiting.
    pub fn answer_deadline(&self) -> Option<Instant> {
        self.rebalance_deadline.or(self.sync_deadline)
    }

    /// Session expiry, rebalance and sync deadlines. Called periodically.
    pub fn tick(&mut self, now: Instant) {
        self.expire_pending(now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, now);
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::CompletingRebalance if self.sync_deadline.is_some_and(|d| now >= d) => {
                // The leader never sent the assignment: start over.
                self.prepare_rebalance(now, false);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: instance.map(str::to_string),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            requires_known_member_id: true,
        }
    }

    fn now_result<T>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(r) => r,
            Reply::Later(_) => panic!("expected an immediate reply"),
        }
    }

    fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected a deferred reply"),
        }
    }

    /// Joins with the MEMBER_ID_REQUIRED round trip; returns the id and receiver.
    fn join(group: &mut Group, now: Instant) -> (String, oneshot::Receiver<JoinResult>) {
        let first = now_result(group.join(request("", None), now));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        let rx = later(group.join(request(&first.member_id, None), now));
        (first.member_id, rx)
    }

    #[test]
    fn an_empty_group_with_a_pending_member_is_kept_until_the_id_expires() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        assert!(group.is_forgettable());
        let first = now_result(group.join(request("", None), t0));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        group.tick(t0 + Duration::from_millis(10));
        assert!(
            !group.is_forgettable(),
            "forgetting it now would refuse the rejoin with UNKNOWN_MEMBER_ID"
        );
        group.tick(t0 + MAX_SESSION_TIMEOUT + Duration::from_secs(1));
        assert!(group.is_forgettable(), "an unused id expires");
    }

    #[test]
    fn a_pending_id_lives_as_long_as_the_session_timeout_it_asked_for() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        let mut short = request("", None);
        short.session_timeout = MIN_SESSION_TIMEOUT;
        let first = now_result(group.join(short.clone(), t0));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        group.tick(t0 + MIN_SESSION_TIMEOUT - Duration::from_millis(1));
        assert!(!group.is_forgettable(), "still usable just before its timeout");
        group.tick(t0 + MIN_SESSION_TIMEOUT);
        assert!(
            group.is_forgettable(),
            "gone at its session timeout, not after 30 minutes"
        );
        assert_eq!(group.pending_count(), 0);

        // Used after its timeout but before a tick swept it: unknown too.
        let second = now_result(group.join(short.clone(), t0));
        let mut late = short;
        late.member_id = second.member_id;
        assert_eq!(
            now_result(group.join(late, t0 + MIN_SESSION_TIMEOUT)).error,
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn join_group_spam_stops_at_the_group_max_size() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        let mut first_id = String::new();
        for i in 0..GROUP_MAX_SIZE {
            let r = now_result(group.join(request("", None), t0));
            assert_eq!(r.error, ResponseError::MemberIdRequired.code(), "join {i}");
            if i == 0 {
                first_id = r.member_id;
            }
        }
        let refused = now_result(group.join(request("", None), t0));
        assert_eq!(refused.error, ResponseError::GroupMaxSizeReached.code());
        assert_eq!(refused.member_id, "", "as Kafka answers it");
        assert_eq!(group.pending_count(), GROUP_MAX_SIZE);
        // An id already handed out holds its place and can still join.
        let mut joined = later(group.join(request(&first_id, None), t0));
        assert_eq!(joined.try_recv().unwrap().unwrap().error, 0);
        assert_eq!(group.pending_count(), GROUP_MAX_SIZE - 1);
        // The unused ids expire with their session timeout (10 s here),
        // which makes room without waiting for a tick.
        let t1 = t0 + Duration::from_secs(10);
        let again = now_result(group.join(request("", None), t1));
        assert_eq!(again.error, ResponseError::MemberIdRequired.code());
        assert_eq!(group.pending_count(), 1);
    }

    #[test]
    fn members_count_against_the_cap_and_a_known_static_instance_always_returns() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0).with_max_size(2);
        let mut a = later(group.join(request("", Some("instance-a")), t0));
        let a = a.try_recv().unwrap().unwrap();
        group.sync(&a.member_id, Some("instance-a"), a.generation, vec![], t0);
        let (b, _b_join) = join(&mut group, t0);
        assert_eq!(
            now_result(group.join(request("", None), t0)).error,
            ResponseError::GroupMaxSizeReached.code()
        );
        assert_eq!(
            now_result(group.join(request("", Some("instance-c")), t0)).error,
            ResponseError::GroupMaxSizeReached.code(),
            "a new static instance is a new member"
        );
        // instance-a restarting (empty member id) replaces itself.
        let back = group.join(request("", Some("instance-a")), t0);
        let back = match back {
            Reply::Now(r) => r,
            Reply::Later(mut rx) => rx.try_recv().unwrap().unwrap(),
        };
        assert_ne!(back.error, ResponseError::GroupMaxSizeReached.code());
        assert!(group.members.contains_key(&b));
    }

    #[test]
    fn two_members_join_sync_and_heartbeat() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::from_millis(100), t0);
        let (a, mut a_join) = join(&mut group, t0);
        let (b, mut b_join) = join(&mut group, t0);
        group.tick(t0 + Duration::from_millis(50));
        assert!(
            a_join.try_recv().unwrap().is_none(),
            "initial delay still running"
        );
        group.tick(t0 + Duration::from_millis(150));
        let a_result = a_join.try_recv().unwrap().unwrap();
        let b_result = b_join.try_recv().unwrap().unwrap();
        assert_eq!(a_result.generation, 1);
        assert_eq!(a_result.leader, a);
        assert_eq!(a_result.members.len(), 2, "leader sees every member");
        assert!(b_result.members.is_empty());
        assert_eq!(a_result.protocol_name.as_deref(), Some("range"));

        let t1 = t0 + Duration::from_millis(200);
        let mut b_sync = later(group.sync(&b, None, 1, vec![], t1));
        let mut a_sync = later(group.sync(
            &a,
            None,
            1,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
            t1,
        ));
        assert_eq!(&a_sync.try_recv().unwrap().unwrap().assignment[..], b"A");
        assert_eq!(&b_sync.try_recv().unwrap().unwrap().assignment[..], b"B");
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(group.heartbeat(&a, None, 1, t1), 0);
        assert_eq!(
            group.heartbeat(&a, None, 0, t1),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            group.heartbeat("nobody", None, 1, t1),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn a_leaving_member_triggers_a_rebalance_and_an_expired_one_is_removed() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        let (a, mut a_join) = join(&mut group, t0);
        let a_result = a_join.try_recv().unwrap().unwrap();
        assert_eq!(a_result.generation, 1);
        let (b, mut b_join) = join(&mut group, t0);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(&a, None, 1, t0),
            ResponseError::RebalanceInProgress.code()
        );
        let mut a_rejoin = later(group.join(request(&a, None), t0));
        assert_eq!(a_rejoin.try_recv().unwrap().unwrap().generation, 2);
        assert_eq!(b_join.try_recv().unwrap().unwrap().generation, 2);
        group.sync(&a, None, 2, vec![], t0);
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(group.leave(&b, None, t0), 0);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        let mut a_again = later(group.join(request(&a, None), t0));
        assert_eq!(a_again.try_recv().unwrap().unwrap().generation, 3);
        group.sync(&a, None, 3, vec![], t0);
        // a stops heartbeating: after its session timeout it is gone.
        group.tick(t0 + Duration::from_secs(11));
        assert_eq!(group.state, GroupState::Empty);
        assert!(group.members.is_empty());
    }

    #[test]
    fn static_member_rejoins_a_stable_group_without_a_rebalance() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        let mut a_join = later(group.join(request("", Some("instance-a")), t0));
        let a = a_join.try_recv().unwrap().unwrap();
        let mut b_join = later(group.join(request("", Some("instance-b")), t0));
        assert!(b_join.try_recv().unwrap().is_none());
        let mut a_rejoin = later(group.join(request(&a.member_id, Some("instance-a")), t0));
        let a2 = a_rejoin.try_recv().unwrap().unwrap();
        let b2 = b_join.try_recv().unwrap().unwrap();
        group.sync(
            &a2.member_id,
            Some("instance-a"),
            a2.generation,
            vec![(b2.member_id.clone(), Bytes::from_static(b"B"))],
            t0,
        );
        assert_eq!(group.state, GroupState::Stable);
        let generation = group.generation;
        // instance-b restarts: new member id, same assignment, no rebalance.
        let back = now_result(group.join(request("", Some("instance-b")), t0));
        assert_eq!(back.error, 0);
        assert_ne!(back.member_id, b2.member_id);
        assert_eq!(back.generation, generation);
        assert_eq!(group.state, GroupState::Stable);
        let synced = now_result(group.sync(&back.member_id, Some("instance-b"), generation, vec![], t0));
        assert_eq!(&synced.assignment[..], b"B");
        // The old id is fenced.
        assert_eq!(
            group.heartbeat(&b2.member_id, Some("instance-b"), generation, t0),
            ResponseError::FencedInstanceId.code()
        );
    }

    #[test]
    fn bad_session_timeouts_and_protocols_are_refused() {
        let t0 = Instant::now();
        let mut group = Group::new("g", Duration::ZERO, t0);
        let mut short = request("", None);
        short.session_timeout = Duration::from_millis(10);
        assert_eq!(
            now_result(group.join(short, t0)).error,
            ResponseError::InvalidSessionTimeout.code()
        );
        let (_, mut rx) = join(&mut group, t0);
        assert_eq!(rx.try_recv().unwrap().unwrap().error, 0);
        let mut other = request("", None);
        other.protocols = vec![("cooperative-sticky".into(), Bytes::new())];
        other.requires_known_member_id = false;
        assert_eq!(
            now_result(group.join(other, t0)).error,
            ResponseError::InconsistentGroupProtocol.code()
        );
        assert_eq!(
            now_result(group.join(request("made-up", None), t0)).error,
            ResponseError::UnknownMemberId.code()
        );
    }
}
