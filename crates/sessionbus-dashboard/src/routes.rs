//! The HTTP routes: the page's three files, its JSON reads (a session's past turns and
//! tool generations among them), and the live events (SSE).
//! Every route is a `GET` that reads the bus; nothing here writes to it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use sessionbus_api::{ErrorKind, PluginError, SessionListQuery, SessionStateService as _, TurnListQuery};
use sessionbus_nats::BusClient;
use sessionbus_nats::wire::GraphPageRequest;

use crate::auth::{self, Presented, TOKEN_COOKIE};
use crate::views;

/// The most nodes one graph request returns.
pub const GRAPH_PAGE_LIMIT: u32 = 5000;

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) bus: BusClient,
    pub(crate) token: Option<String>,
    pub(crate) jaeger_url: Option<String>,
}

/// The page may load only its own script and style, and nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The router of the dashboard.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| asset("text/javascript; charset=utf-8", include_str!("../assets/app.js"))))
        .route("/style.css", get(|| asset("text/css; charset=utf-8", include_str!("../assets/style.css"))))
        .route("/api/config", get(config))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", get(session))
        .route("/api/sessions/{id}/graph", get(graph))
        .route("/api/sessions/{id}/tools", get(tools))
        .route("/api/sessions/{id}/turns", get(turns))
        .route("/api/sessions/{id}/tool-history", get(tool_history))
        .route("/api/workers", get(workers))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), require_token))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The page; a valid `?token=` is moved into an HttpOnly cookie, so later requests
/// (and the event stream) carry it without the page's script ever holding it.
async fn index(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut response = asset("text/html; charset=utf-8", include_str!("../assets/index.html")).await;
    if let Some(token) = &state.token {
        let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = HeaderValue::from_str(&cookie)
            && request.uri().query().is_some()
        {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let presented = Presented {
        authorization: text(header::AUTHORIZATION),
        cookie: text(header::COOKIE),
        query: request.uri().query(),
    };
    if auth::authorized(state.token.as_deref(), &presented) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "this dashboard needs its token: open the link `sessionbus dashboard` printed\n")
            .into_response()
    }
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A bus error as an HTTP answer: the status from its kind, its message as JSON.
fn bus_error(err: &PluginError) -> Response {
    let status = match err.kind() {
        ErrorKind::Session => StatusCode::NOT_FOUND,
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, Json(json!({ "error": err.message() }))).into_response()
}

async fn config(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "jaeger_url": state.jaeger_url }))
}

/// One page of the registry (`?limit=&after=&status=open|closed&parent=`), in creation
/// order, through the bus's `sessions` op.
async fn sessions(State(state): State<Arc<AppState>>, Query(query): Query<SessionListQuery>) -> Response {
    match state.bus.list_sessions(&query).await {
        Ok(page) => Json(page).into_response(),
        Err(err) => bus_error(&err),
    }
}

/// One session: its counters, leaf, graph size and the graph's first page; the rest
/// of the graph is read with `graph` from `next` up to `as_of` (both null when the
/// first page is the whole graph).
async fn session(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.bus.snapshot_first_page::<views::SnapshotHead>(&id).await {
        Ok(head) => Json(views::session_view(head)).into_response(),
        Err(err) => bus_error(&err),
    }
}

/// `?after=N&limit=L&as_of=M` of a graph read (`as_of`: stop at the graph of that
/// many nodes, the first page's).
#[derive(Deserialize)]
struct GraphQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    as_of: Option<u64>,
}

/// One page of the graph, as node views, and where the next starts.
async fn graph(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<GraphQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(GRAPH_PAGE_LIMIT).clamp(1, GRAPH_PAGE_LIMIT);
    let request = GraphPageRequest { after_seq: query.after, limit, as_of: query.as_of };
    match state.bus.graph_page(&id, &request).await {
        Ok(page) => Json(views::graph_page_view(&page)).into_response(),
        Err(err) => bus_error(&err),
    }
}

/// Tool membership now: the generation, and every tool with whether it is a member.
async fn tools(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.bus.tool_state(&id).await {
        Ok(tool_state) => {
            let tools: Vec<Value> = tool_state
                .iter()
                .map(|(_, entry)| {
                    json!({"name": entry.manifest().name, "member": entry.is_member(), "orphaned": entry.is_orphaned()})
                })
                .collect();
            Json(json!({
                "generation": tool_state.generation,
                "members": sessionbus_api::member_names(&tool_state),
                "tools": tools,
            }))
            .into_response()
        }
        Err(err) => bus_error(&err),
    }
}

/// One page of the session's turns (`?limit=&after=`), oldest first, through the bus's
/// `turns` op: `{turns, next_after, lease}` (the lease on the first page only).
async fn turns(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<TurnListQuery>,
) -> Response {
    match state.bus.list_turns(&id, &query).await {
        Ok(page) => {
            let turns: Vec<Value> = page.turns.iter().map(views::history_turn_view).collect();
            Json(json!({ "turns": turns, "next_after": page.next_after, "lease": page.lease })).into_response()
        }
        Err(err) => bus_error(&err),
    }
}

/// The session's tool generations, oldest first, through the bus's `tool_history` op.
async fn tool_history(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.bus.tool_history(&id).await {
        Ok(history) => Json(history).into_response(),
        Err(err) => bus_error(&err),
    }
}

async fn workers(State(state): State<Arc<AppState>>) -> Response {
    match crate::workers::workers(state.bus.nats()).await {
        Ok(view) => Json(view).into_response(),
        Err(err) => bus_error(&err),
    }
}

/// `?session=<id>` narrows the events to one session.
#[derive(Deserialize)]
struct EventsQuery {
    session: Option<String>,
}

/// Server-sent events: one `message` per session event the page draws (see
/// [`views::event_view`]), from the events subjects, live; for one session, its running
/// turn's live output too ([`views::live_view`], from `live.<sid>`). Each subscription
/// is bounded: a page that falls behind loses events rather than growing the server.
async fn events(State(state): State<Arc<AppState>>, Query(query): Query<EventsQuery>) -> Response {
    let Some(id) = query.session else {
        return match state.bus.events_all().await {
            Ok(stream) => sse(session_events(stream)),
            Err(err) => bus_error(&err),
        };
    };
    let subscribed = match state.bus.events(&id).await {
        Ok(events) => state.bus.live_output(&id).await.map(|live| (events, live)),
        Err(err) => Err(err),
    };
    match subscribed {
        Ok((events, live)) => {
            let live = live.filter_map(move |output| {
                let view = views::live_view(&id, &output);
                async move { view }
            });
            sse(futures::stream::select(session_events(events), live))
        }
        Err(err) => bus_error(&err),
    }
}

fn session_events(stream: sessionbus_nats::EventStream) -> impl Stream<Item = Value> {
    stream.filter_map(|event| async move { views::event_view(&event) })
}

fn sse(views: impl Stream<Item = Value> + Send + 'static) -> Response {
    let events = views.map(|view| Ok::<_, Infallible>(Event::default().data(view.to_string())));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
