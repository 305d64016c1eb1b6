//! The management API's OpenAPI 3 document, made from the route table ([`ROUTES`]) the
//! server routes by, so the two cannot drift: every route with its path parameters, the JSON
//! body each operation reads (its fields and which are required), the role it needs, and the
//! one error shape.

use serde_json::{Map, Value, json};

use super::ops::{PACKAGE_UPLOAD, ROUTES, Route};

/// A body field: its name, JSON type, whether it is required, and what it is.
type Field = (&'static str, &'static str, bool, &'static str);

/// The JSON body fields of operation `op` (those its path does not hold).
fn fields(op: &str) -> &'static [Field] {
    match op {
        "device-add" => &[
            ("id", "string", true, "the controller id"),
            ("tenant", "string", false, "the tenant (default: the first served)"),
            ("token", "string", false, "the target token (default: made and answered once)"),
        ],
        "program-add" => &[
            ("package", "string", true, "the package, name@version or id"),
            ("name", "string", true, "the program's name"),
            ("signed_program", "string", false, "the signed program it runs (default: name)"),
            ("command", "string", false, "the command, checked against the signed one"),
            ("platforms", "array", false, "platforms it is narrowed to"),
            ("max_run_time", "integer", false, "a shorter maximum run time, seconds"),
            ("device_class", "string", false, "mobile or desktop"),
        ],
        "collection-add" => &[
            ("name", "string", true, "its name"),
            ("rule", "string", true, "all, platform=…, model=…, client_version<…, explicit"),
            ("tenant", "string", false, "its tenant (default DEFAULT)"),
        ],
        "advertise" => &[
            ("name", "string", true, "the advertisement's name"),
            ("program", "string", true, "the program"),
            ("collection", "string", true, "the collection"),
            ("kind", "string", false, "mandatory (default), available or download-only"),
            ("start", "string", false, "when it becomes due, RFC 3339 (default now)"),
            ("expires", "string", false, "when it expires, RFC 3339"),
            ("maintenance_window", "string", false, "daily window in UTC, 22:00-04:00"),
            ("rerun", "string", false, "never (default), always, if-failed, if-succeeded"),
            ("allow_downgrade", "boolean", false, "whether an older version is allowed"),
        ],
        "rollout-act" => {
            &[("program", "string", false, "with resume: the fixed version's program")]
        }
        "dp-add" => &[
            ("name", "string", true, "its name"),
            ("url", "string", true, "where devices reach it, https://host:port"),
            ("site", "string", false, "its site code"),
            ("boundaries", "array", false, "address ranges (CIDR) of its devices"),
            ("pull_from", "string", false, "the distribution point it copies from"),
            ("rate_limit_kib", "integer", false, "KiB per second it copies at most"),
            ("window", "string", false, "daily copy window in UTC, 22:00-06:00"),
        ],
        "dp-act" => &[("dps", "array", false, "distribution points, or all (not with update)")],
        "device-import" => &[
            ("csv", "string", true, "controller_id,target_token lines"),
            ("tenant", "string", false, "their tenant (default: the first served)"),
        ],
        "update-deploy" => &[
            ("name", "string", true, "its name"),
            ("collection", "string", true, "the collection"),
            ("updates", "array", false, "ids, PACKAGE=VERSION or PACKAGE"),
            ("all_approved", "boolean", false, "the newest approved version of every package"),
            ("security", "boolean", false, "the newest approved security updates"),
            ("available", "string", false, "from when devices may download, RFC 3339"),
            ("deadline", "string", false, "when devices install, RFC 3339"),
            ("spread", "string", false, "each device's deadline later by up to this: 2h, 1d"),
            ("reboot", "string", false, "allow or suppress (default)"),
            ("maintenance_window", "string", false, "daily window in UTC, 22:00-04:00"),
            ("held", "boolean", false, "offered to no device until a rollout releases it"),
        ],
        "rollout-create" => &[
            ("name", "string", true, "its name"),
            ("program", "string", false, "the program, or"),
            ("update_deployment", "string", false, "the held update deployment"),
            ("collection", "string", false, "the collection (a program's)"),
            ("groups", "string", false, "1%,10%,50%,100% or size:N"),
            ("success_threshold", "percent", false, "percent confirmed before the next group"),
            ("error_threshold", "percent", false, "percent failed that pauses"),
            ("soak", "seconds", false, "seconds a device stays healthy to count"),
            ("silent_after", "seconds", false, "seconds of silence that fail a device"),
            ("start", "string", false, "when it starts by itself, RFC 3339"),
            ("approval", "boolean", false, "whether it waits for approval"),
            ("joins_per_minute", "integer", false, "devices joining a minute"),
            ("allow_downgrade", "boolean", false, "whether an older version is allowed"),
            ("rollback_program", "string", false, "the previous version's program"),
            ("maintenance_window", "string", false, "daily window in UTC"),
        ],
        "update-compliance" => &[
            ("update", "string", false, "one update"),
            ("device", "string", false, "one device"),
            ("collection", "string", false, "one collection's devices"),
        ],
        "compliance" => &[
            ("device", "string", false, "one device"),
            ("advertisement", "string", false, "one advertisement's devices and items"),
        ],
        "report" => &[
            ("advertisement", "string", false, "one advertisement"),
            ("device", "string", false, "one device"),
            ("state", "string", false, "one distribution state"),
            ("filter", "string", false, "rows holding this text"),
            ("sort", "string", false, "the column to sort by"),
            ("dir", "string", false, "desc for largest first"),
            ("limit", "string", false, "the most rows, 1 to 1000"),
            ("after_tenant", "string", false, "a page starts after this device's tenant"),
            ("after", "string", false, "and controller id (the previous answer's next)"),
            ("offset", "string", false, "a sorted page starts after this many rows"),
        ],
        "dp-status" => &[
            ("package", "string", false, "one package"),
            ("dp", "string", false, "one distribution point"),
        ],
        "audit" => &[(
            "since",
            "string",
            false,
            "from when: RFC 3339 or Unix seconds (default: the last day)",
        )],
        "token-create" => &[
            ("name", "string", true, "its name"),
            ("role", "string", true, "read-only, operator or administrator"),
            ("expires", "string", false, "how long it works: 90d, 12h, 30m or seconds"),
            ("tenant", "string", false, "the one tenant it sees (default: every tenant)"),
        ],
        _ => &[],
    }
}

fn field_schema(kind: &str, what: &str) -> Value {
    match kind {
        "array" => json!({"type": "array", "items": {"type": "string"}, "description": what}),
        "integer" => {
            json!({"type": "integer", "minimum": 1, "maximum": 100000, "description": what})
        }
        "percent" => json!({"type": "integer", "minimum": 1, "maximum": 100, "description": what}),
        "seconds" => {
            json!({"type": "integer", "minimum": 0, "maximum": 2592000, "description": what})
        }
        k => json!({"type": k, "description": what}),
    }
}

/// The operation object of one route.
fn operation(r: &Route) -> Value {
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let mut schema = json!({"type": "string", "minLength": 1});
            if name == "action" {
                schema = json!({"type": "string", "enum": ["approve", "start", "pause", "resume", "stop"]});
            }
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    if r.method == "GET" {
        for (name, _, _, what) in fields(r.op) {
            params.push(json!({"name": name, "in": "query", "required": false,
                "description": what, "schema": {"type": "string"}}));
        }
    }
    let mut op = json!({
        "operationId": r.op,
        "summary": r.summary,
        "description": format!("Needs the role {}.", r.role.as_str()),
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": responses(r),
    });
    if r.op == PACKAGE_UPLOAD {
        op["requestBody"] = json!({"required": true, "content": {"application/octet-stream":
            {"schema": {"type": "string", "format": "binary"}}}});
    } else if r.method == "POST" {
        let fs = fields(r.op);
        let mut props = Map::new();
        for (name, kind, _, what) in fs {
            props.insert((*name).into(), field_schema(kind, what));
        }
        let required: Vec<&str> = fs.iter().filter(|f| f.2).map(|f| f.0).collect();
        let mut schema =
            json!({"type": "object", "properties": props, "additionalProperties": false});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        op["requestBody"] = json!({"required": !required.is_empty(),
            "content": {"application/json": {"schema": schema}}});
    }
    op
}

fn responses(r: &Route) -> Value {
    let error = |what: &str| {
        json!({"description": what, "content": {"application/json":
            {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let ok = if r.op == PACKAGE_UPLOAD { "201" } else { "200" };
    let mut m = Map::new();
    m.insert(
        ok.into(),
        json!({"description": "the operation's answer, as `dmmp --json` prints it",
        "content": {"application/json": {"schema": {}}}}),
    );
    for (code, what) in [
        ("400", "the request is malformed or names something that cannot be"),
        ("401", "the token is missing, unknown, expired or revoked"),
        ("403", "the token's role does not allow it"),
        ("404", "nothing has that name"),
        ("409", "it exists already, or is in use"),
        ("413", "the body is too large"),
        ("429", "the token made too many requests this minute"),
        ("500", "the server failed"),
    ] {
        m.insert(code.into(), error(what));
    }
    Value::Object(m)
}

/// The whole document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method.to_lowercase()] = operation(r);
    }
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": {"operationId": "openapi", "summary": "This document", "security": [],
            "responses": {"200": {"description": "the OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "dmmp management API",
            "version": "1",
            "description": "The management point's administrative operations, as `dmmp` runs them (docs/management-api.md)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "an API token from `dmmp token create`"}},
            "schemas": {"Error": {"type": "object", "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer", "description": "the HTTP status"},
                    "code": {"type": "string", "description": "the status code's name (docs/status-codes.md)"},
                    "message": {"type": "string"}
                }}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_parameters_and_body() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert_eq!(op["operationId"], r.op, "{} {}", r.method, r.path);
            let named: Vec<&str> =
                r.path.split('/').filter_map(|p| p.strip_prefix('{')?.strip_suffix('}')).collect();
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(params, named, "{}", r.path);
            assert_eq!(op["requestBody"].is_object(), r.method == "POST", "{}", r.op);
        }
    }

    #[test]
    fn each_documented_body_is_what_the_operation_reads() {
        use super::super::ops::Op;
        // A body of every documented field deserializes; the required ones alone do too.
        for r in ROUTES.iter().filter(|r| r.method == "POST" && r.op != PACKAGE_UPLOAD) {
            let value = |kind: &str| match kind {
                "array" => json!(["linux-aarch64"]),
                "integer" | "percent" | "seconds" => json!(60),
                "boolean" => json!(true),
                _ => json!("x"),
            };
            let all: Map<String, Value> =
                fields(r.op).iter().map(|(n, k, _, _)| ((*n).to_string(), value(k))).collect();
            let required: Map<String, Value> = fields(r.op)
                .iter()
                .filter(|f| f.2)
                .map(|(n, k, _, _)| ((*n).to_string(), value(k)))
                .collect();
            let path = r.path.split('/').filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'));
            let params: Vec<(String, String)> =
                path.map(|p| (p.to_string(), "x".to_string())).collect();
            for body in [all, required] {
                Op::from_route(r, params.clone(), Value::Object(body))
                    .unwrap_or_else(|e| panic!("{}: {e}", r.op));
            }
        }
    }
}
