//! Groups, their members, node ceilings and enrollment codes.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use http::StatusCode;
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::{Ceiling, Op, Right, rights::above_ceiling, token::MAX_RIGHTS},
    http::extract::Json as JsonBody,
    ident::Ident,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Caller,
    directory::{GroupRow, NewCode, NodeRow},
    rbac::Action,
    secrets::{Kind, NewToken},
    state::ManagementState,
    store::now_ms,
    vault::Registration,
};

/// `POST /v1/groups`: the new group.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupAnswer {
    /// The group.
    pub group: GroupRow,
}

/// `GET /v1/groups`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupList {
    /// By id: all for holders of users:read, else the caller's.
    pub groups: Vec<GroupRow>,
}

/// `GET /v1/groups/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupDetail {
    /// The group.
    pub group: GroupRow,
    /// Its members' user ids, in the order they were added.
    pub members: Vec<String>,
    /// Its nodes.
    pub nodes: Vec<NodeRow>,
}

/// `PUT /v1/groups/{id}/members/{user}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Membership {
    /// The group.
    pub group: String,
    /// The user.
    pub user: String,
    /// `false`: they were a member already.
    pub added: bool,
}

/// `POST /v1/groups/{id}/enrollment-codes`: the code, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrollmentCode {
    /// The one-time code (`kme_…`): never shown again.
    pub code: String,
    /// Its public id (in the audit log).
    pub code_id: String,
    /// The group the node joins.
    pub group: String,
    /// The node's ceiling.
    pub ceiling: Op,
    /// The rights of the node's first token.
    pub rights: Vec<Right>,
    /// The code expires then (unix ms).
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for EnrollmentCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentCode")
            .field("code_id", &self.code_id)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/nodes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    /// The nodes.
    pub nodes: Vec<NodeRow>,
}

/// `PUT /v1/nodes/{id}/ceiling`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CeilingSet {
    /// The node.
    pub node: String,
    /// Its ceiling now.
    pub ceiling: Op,
    /// The vault revoked the node's tokens (the ceiling went down).
    pub tokens_revoked: bool,
}

/// `POST /v1/groups` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    id: Ident,
    /// Highest secret operation a node of the group gets without approval (default `list`).
    #[serde(default)]
    node_ceiling: Option<Op>,
}

/// `POST /v1/groups` (groups:manage).
#[utoipa::path(
    post,
    path = "/v1/groups",
    operation_id = "groups_create",
    tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, body = GroupAnswer),
        (status = 409, body = ErrorBody, description = "`conflict`: the group exists."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn create(
    State(state): State<ManagementState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<(StatusCode, Json<GroupAnswer>), ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    let ceiling = body.node_ceiling.unwrap_or(Ceiling::AGENT.0);
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "group.create",
                format!("group:{}", body.id),
                Outcome::Success,
            )
            .with_details(json!({ "node_ceiling": ceiling })),
        )
        .await?;
    let group = state
        .store
        .insert_group(&body.id, ceiling.as_str(), &caller.actor())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::with_message(ErrorCode::Conflict, "this group exists"))?;
    Ok((StatusCode::CREATED, Json(GroupAnswer { group })))
}

/// `GET /v1/groups`: every group for holders of users:read, else the caller's own.
#[utoipa::path(
    get,
    path = "/v1/groups",
    operation_id = "groups_list",
    tag = "groups",
    responses(
        (status = 200, body = GroupList, description = "All for users:read, else the caller's."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Json<GroupList>, ApiError> {
    let member = (!caller.holds(&state, Action::UsersRead)).then_some(caller.user.id.as_str());
    let groups = state
        .store
        .groups(member)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(GroupList { groups }))
}

/// The group, if the caller may see it: holders of users:read see every group, members their
/// own. Others get the same `not_found` as for a group that does not exist.
pub(crate) async fn visible_group(
    state: &ManagementState,
    caller: &Caller,
    id: &str,
) -> Result<GroupRow, ApiError> {
    let group = state.store.group(id).await.map_err(ApiError::internal)?;
    let visible = match &group {
        Some(_) if caller.holds(state, Action::UsersRead) => true,
        Some(_) => state
            .store
            .is_member(id, &caller.user.id)
            .await
            .map_err(ApiError::internal)?,
        None => false,
    };
    group
        .filter(|_| visible)
        .ok_or_else(|| ApiError::with_message(ErrorCode::NotFound, "no such group"))
}

/// `GET /v1/groups/{id}`: the group, its members and its nodes.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}",
    operation_id = "groups_show",
    tag = "groups",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    responses(
        (status = 200, body = GroupDetail),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group, or not visible to the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn show(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
) -> Result<Json<GroupDetail>, ApiError> {
    let group = visible_group(&state, &caller, &id).await?;
    let members = state.store.members(&id).await.map_err(ApiError::internal)?;
    let nodes = state
        .store
        .nodes(Some(&id), None)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(GroupDetail {
        group,
        members,
        nodes,
    }))
}

/// `PUT /v1/groups/{id}/members/{user}` (groups:manage).
#[utoipa::path(
    put,
    path = "/v1/groups/{id}/members/{user}",
    operation_id = "groups_add_member",
    tag = "groups",
    params(("id" = inline(Ident), Path, description = "The group's id."), ("user" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, body = Membership),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group or user."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn add_member(
    State(state): State<ManagementState>,
    caller: Caller,
    Path((id, user)): Path<(Ident, Ident)>,
) -> Result<Json<Membership>, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    existing_group(&state, &id).await?;
    if state
        .store
        .user(&user)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::with_message(ErrorCode::NotFound, "no such user"));
    }
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "group.member.add",
                format!("group:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "user": user })),
        )
        .await?;
    let added = state
        .store
        .add_member(&id, &user)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Membership {
        group: id.to_string(),
        user: user.to_string(),
        added,
    }))
}

/// `DELETE /v1/groups/{id}/members/{user}` (groups:manage). Refused while the user still has
/// enabled nodes in the group: disable them (or revoke the user's tokens) first, so that
/// leaving a group never leaves a working node behind unnoticed.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/members/{user}",
    operation_id = "groups_remove_member",
    tag = "groups",
    params(("id" = inline(Ident), Path, description = "The group's id."), ("user" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Removed; their unused enrollment codes are deleted."),
        (status = 404, body = ErrorBody, description = "`not_found`: not a member."),
        (status = 409, body = ErrorBody, description = "`conflict`: the member has enabled nodes in the group."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn remove_member(
    State(state): State<ManagementState>,
    caller: Caller,
    Path((id, user)): Path<(Ident, Ident)>,
) -> Result<StatusCode, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    existing_group(&state, &id).await?;
    let enabled = state
        .store
        .nodes(Some(&id), Some(&user))
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|n| n.disabled_at_ms.is_none())
        .map(|n| n.id)
        .collect::<Vec<_>>();
    if !enabled.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "the user still has enabled nodes in this group; disable them first",
        )
        .with_details(json!({ "nodes": enabled })));
    }
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "group.member.remove",
                format!("group:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "user": user })),
        )
        .await?;
    // Their unused enrollment codes for the group die with the membership.
    if state
        .store
        .remove_member(&id, &user)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::with_message(
            ErrorCode::NotFound,
            "the user is not a member of this group",
        ))
    }
}

pub(crate) async fn existing_group(
    state: &ManagementState,
    id: &str,
) -> Result<GroupRow, ApiError> {
    state
        .store
        .group(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::with_message(ErrorCode::NotFound, "no such group"))
}

/// `POST /v1/groups/{id}/enrollment-codes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCode {
    /// The node's ceiling (default: the group's node ceiling).
    #[serde(default)]
    ceiling: Option<Op>,
    /// Rights of the node's first token (default: send to every node of the group, nothing
    /// else).
    #[serde(default)]
    rights: Option<Vec<Right>>,
    /// Lifetime, at most `MANAGEMENT_ENROLL_TTL_SECS` (the default).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// `POST /v1/groups/{id}/enrollment-codes` (nodes:enroll, and a member of the group unless
/// the caller holds groups:manage): a one-time code that enrolls one node into the group, as
/// the caller's. A ceiling above the group's needs groups:manage; first-token rights above
/// the ceiling are refused with `approval_required`, never truncated.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/enrollment-codes",
    operation_id = "groups_create_code",
    tag = "enrollment",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    request_body = CreateCode,
    responses(
        (status = 201, body = EnrollmentCode, description = "The code, shown once."),
        (status = 403, body = ErrorBody, description = "`approval_required` (`details.excess`): the first token's rights exceed the node's ceiling; `forbidden`: the caller's role does not allow this."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group or not a member."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn create_code(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<CreateCode>,
) -> Result<(StatusCode, Json<EnrollmentCode>), ApiError> {
    caller.require(&state, Action::NodesEnroll)?;
    // Members, and holders of groups:manage (with a recent sign-in), enroll into a group;
    // anyone else gets the same answer as for a group that does not exist.
    let member = state
        .store
        .is_member(&id, &caller.user.id)
        .await
        .map_err(ApiError::internal)?;
    let group = match state.store.group(&id).await.map_err(ApiError::internal)? {
        Some(g) if member || caller.holds(&state, Action::GroupsManage) => g,
        _ => return Err(ApiError::with_message(ErrorCode::NotFound, "no such group")),
    };
    if !member {
        caller.require(&state, Action::GroupsManage)?;
    }
    let group_ceiling: Op = group
        .node_ceiling
        .parse()
        .map_err(|e: String| ApiError::internal(std::io::Error::other(e)))?;
    let ceiling = body.ceiling.unwrap_or(group_ceiling);
    if ceiling > group_ceiling {
        caller.require(&state, Action::GroupsManage)?;
    }
    let rights = body.rights.unwrap_or_else(|| vec![Right::send_to_group()]);
    if rights.is_empty() || rights.len() > MAX_RIGHTS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("a token carries 1 to {MAX_RIGHTS} rights"),
        ));
    }
    let excess = above_ceiling(&rights, Ceiling(ceiling));
    if !excess.is_empty() {
        return Err(ApiError::with_message(
            ErrorCode::ApprovalRequired,
            "the first token's rights exceed the node's ceiling; enroll within it and ask for more with an approval request",
        )
        .with_details(json!({ "operation": "enrollment", "excess": excess })));
    }
    let max = state.config.enroll_ttl.as_secs();
    let ttl = body.ttl_secs.unwrap_or(max);
    if ttl == 0 || ttl > max {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("ttl_secs must be between 1 and {max}"),
        ));
    }
    let expires_at_ms = now_ms() + i64::try_from(ttl * 1000).unwrap_or(i64::MAX);
    let code = NewToken::generate(Kind::Enroll);
    let rights_json = serde_json::to_string(&rights).map_err(ApiError::internal)?;
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "enrollment_code.create",
                format!("group:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "ceiling": ceiling, "rights": rights, "ttl_secs": ttl })),
        )
        .await?;
    let code_id = state
        .store
        .insert_code(&NewCode {
            code_hash: &code.hash,
            group_id: &id,
            user_id: &caller.user.id,
            ceiling: ceiling.as_str(),
            rights: &rights_json,
            expires_at_ms,
        })
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentCode {
            code: secrecy::ExposeSecret::expose_secret(&code.token).to_owned(),
            code_id,
            group: id.to_string(),
            ceiling,
            rights,
            expires_at_ms,
        }),
    ))
}

/// `GET /v1/nodes` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NodesQuery {
    group: Option<Ident>,
    user: Option<Ident>,
}

/// `GET /v1/nodes?group=&user=`: holders of users:read see every node; others their own.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    operation_id = "groups_nodes",
    tag = "nodes",
    params(NodesQuery),
    responses(
        (status = 200, body = NodeList),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn nodes(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<NodesQuery>,
) -> Result<Json<NodeList>, ApiError> {
    let user = if caller.holds(&state, Action::UsersRead) {
        q.user.map(String::from)
    } else {
        Some(caller.user.id.clone())
    };
    let nodes = state
        .store
        .nodes(q.group.as_deref(), user.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(NodeList { nodes }))
}

/// `PUT /v1/nodes/{id}/ceiling` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCeiling {
    ceiling: Op,
}

/// `PUT /v1/nodes/{id}/ceiling` (groups:manage): the vault learns it first; lowering it
/// revokes the node's tokens there.
#[utoipa::path(
    put,
    path = "/v1/nodes/{id}/ceiling",
    operation_id = "groups_set_ceiling",
    tag = "nodes",
    params(("id" = inline(Ident), Path, description = "The node's id.")),
    request_body = SetCeiling,
    responses(
        (status = 200, body = CeilingSet, description = "Lowering it revokes the node's tokens."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such node."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn set_ceiling(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<SetCeiling>,
) -> Result<Json<CeilingSet>, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    let node = state.known_node(&id).await?;
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "node.ceiling.set",
                format!("node:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "from": node.ceiling, "to": body.ceiling })),
        )
        .await?;
    let key = hex::encode(&node.public_key);
    let vault = state
        .vault
        .put_node(&Registration::of(&node, &key, body.ceiling.as_str()))
        .await?;
    state
        .store
        .set_node_ceiling(&id, body.ceiling.as_str())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CeilingSet {
        node: id.to_string(),
        ceiling: body.ceiling,
        tokens_revoked: vault.tokens_revoked,
    }))
}
