//! The OpenAPI 3.1 document of the control plane, served at `GET /openapi.json`.
//!
//! It describes what this server does (E2B's endpoints that hutch implements, and hutch's
//! own `/pools` and `/health`): every request field the handlers read, every answer's
//! shape, and every status code a handler can give. `tests/security/test_openapi.py` runs
//! schemathesis against it, so a difference between the two is a test failure; the unit
//! test below checks that every route of the router is in it.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::service::pool::MAX_POOL_SIZE;

/// The document, serialised once.
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| document().to_string())
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(s: Value) -> Value {
    json!({ "application/json": { "schema": s } })
}

/// An answer with a JSON body.
fn body(description: &str, s: Value) -> Value {
    json!({ "description": description, "content": json_content(s) })
}

/// An error answer (E2B's `{"code", "message"}`).
fn error(description: &str) -> Value {
    body(description, schema("Error"))
}

/// The errors every authenticated endpoint can answer, plus `extra` ones.
fn responses(ok: &[(&str, Value)], extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (code, v) in ok {
        m.insert((*code).to_string(), v.clone());
    }
    m.insert(
        "400".into(),
        error("Bad input: a malformed body, query or path, or a value out of range"),
    );
    m.insert("401".into(), error("No API key, or an unknown one"));
    m.insert("413".into(), error("A request body over 2 MiB"));
    m.insert(
        "405".into(),
        error("The path exists, but not with this method"),
    );
    m.insert(
        "500".into(),
        error("The server failed (never expected: the fuzz suite fails on it)"),
    );
    for (code, d) in extra {
        m.insert((*code).to_string(), error(d));
    }
    Value::Object(m)
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string" }
    })
}

fn query_param(name: &str, description: &str, s: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": s })
}

fn json_body(s: Value, required: bool) -> Value {
    json!({ "required": required, "content": json_content(s) })
}

/// A string-to-string map (metadata, environment variables).
fn string_map() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" } })
}

/// Seconds: the server refuses negative values and numbers beyond a 64-bit signed integer;
/// `null` reads as absent.
fn seconds(description: &str) -> Value {
    json!({
        "type": ["integer", "null"], "minimum": 0, "maximum": i64::MAX, "description": description
    })
}

/// A string-to-string map, or `null` (read as absent).
fn optional_map() -> Value {
    json!({ "type": ["object", "null"], "additionalProperties": { "type": "string" } })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn sandbox_id() -> Value {
    path_param("sandboxID", "The sandbox's id")
}

fn template_id() -> Value {
    path_param("templateID", "A template's id or name")
}

fn components() -> Value {
    let sandbox_common = json!({
        "templateID": { "type": "string" },
        "sandboxID": { "type": "string" },
        "clientID": { "type": "string" },
        "alias": nullable("string"),
        "envdVersion": { "type": "string" },
    });
    let mut sandbox = sandbox_common.clone();
    sandbox["envdAccessToken"] = nullable("string");
    sandbox["trafficAccessToken"] = nullable("string");
    sandbox["domain"] = nullable("string");
    let mut listed = sandbox_common;
    listed["startedAt"] = json!({ "type": "string", "format": "date-time" });
    listed["endAt"] = json!({ "type": "string", "format": "date-time" });
    listed["cpuCount"] = json!({ "type": "integer", "minimum": 0 });
    listed["memoryMB"] = json!({ "type": "integer", "minimum": 0 });
    listed["diskSizeMB"] = json!({ "type": "integer", "minimum": 0 });
    listed["state"] = schema("SandboxState");
    listed["metadata"] = string_map();
    let mut detail = listed.clone();
    detail["envdAccessToken"] = nullable("string");
    detail["allowInternetAccess"] = nullable("boolean");
    detail["domain"] = nullable("string");
    detail["lifecycle"] = json!({
        "type": "object",
        "required": ["autoResume", "onTimeout"],
        "properties": {
            "autoResume": { "type": "boolean" },
            "onTimeout": { "type": "string", "enum": ["kill", "pause"] }
        }
    });
    detail["pauseMode"] = json!({
        "type": "string", "enum": ["full", "filesystem"],
        "description": "For a paused sandbox: `full` kept its memory (frozen), `filesystem` only its files (it boots again on resume)"
    });
    detail["network"] = json!({
        "type": "object",
        "description": "The network options it was created or updated with (`allowPublicTraffic` always)",
        "properties": {
            "allowPublicTraffic": { "type": "boolean" },
            "allowOut": { "type": "array", "items": { "type": "string" } },
            "denyOut": { "type": "array", "items": { "type": "string" } },
            "rules": { "type": "object" },
            "dnsServers": { "type": "array", "items": { "type": "string" } },
            "maskRequestHost": { "type": "string" },
            "httpsPorts": { "type": "array", "items": { "type": "integer" } }
        }
    });
    let listed_required = json!([
        "templateID",
        "sandboxID",
        "clientID",
        "alias",
        "envdVersion",
        "startedAt",
        "endAt",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "state",
        "metadata"
    ]);
    let mut detail_required = listed_required.clone();
    if let Some(a) = detail_required.as_array_mut() {
        for f in [
            "envdAccessToken",
            "allowInternetAccess",
            "domain",
            "lifecycle",
        ] {
            a.push(f.into());
        }
    }
    let template_fields = json!({
        "templateID": { "type": "string" },
        "buildID": { "type": "string" },
        "cpuCount": { "type": "integer", "minimum": 0 },
        "memoryMB": { "type": "integer", "minimum": 0 },
        "diskSizeMB": { "type": "integer", "minimum": 0 },
        "public": { "type": "boolean" },
        "aliases": { "type": "array", "items": { "type": "string" } },
        "names": { "type": "array", "items": { "type": "string" } },
        "createdAt": { "type": "string", "format": "date-time" },
        "updatedAt": { "type": "string", "format": "date-time" },
        "createdBy": { "type": "null" },
        "lastSpawnedAt": { "type": "null" },
        "spawnCount": { "type": "integer", "minimum": 0 },
        "buildCount": { "type": "integer", "minimum": 0 },
        "envdVersion": { "type": "string" },
        "buildStatus": { "type": "string", "enum": ["ready"] },
        "parent": { "type": "string" },
    });
    let template_required = json!([
        "templateID",
        "buildID",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "public",
        "aliases",
        "names",
        "createdAt",
        "updatedAt",
        "buildCount",
        "envdVersion",
        "buildStatus"
    ]);
    let mut template_detail = template_fields.clone();
    template_detail["builds"] = json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["buildID", "status", "createdAt", "updatedAt", "finishedAt", "cpuCount", "memoryMB"],
            "properties": {
                "buildID": { "type": "string" },
                "status": { "type": "string", "enum": ["ready"] },
                "createdAt": { "type": "string", "format": "date-time" },
                "updatedAt": { "type": "string", "format": "date-time" },
                "finishedAt": { "type": "string", "format": "date-time" },
                "cpuCount": { "type": "integer" },
                "memoryMB": { "type": "integer" }
            }
        }
    });
    let mut c = json!({
        "securitySchemes": {
            "ApiKeyAuth": { "type": "apiKey", "in": "header", "name": "X-API-KEY" },
            "BearerAuth": { "type": "http", "scheme": "bearer" }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "integer", "description": "The HTTP status code" },
                    "message": { "type": "string" }
                }
            },
            "SandboxState": { "type": "string", "enum": ["running", "paused"] },
            "NewSandbox": {
                "type": "object",
                "required": ["templateID"],
                "properties": {
                    "templateID": {
                        "type": "string", "pattern": "\\S",
                        "description": "A template's id or name (`name:tag` is accepted; the tag is ignored)"
                    },
                    "timeout": seconds("Seconds until the sandbox is killed (or paused with autoPause); capped by the server's maximum"),
                    "metadata": optional_map(),
                    "envVars": {
                        "type": ["object", "null"],
                        "description": "Names as POSIX allows them (not empty, no `=` or NUL); values without NUL bytes",
                        "propertyNames": { "pattern": "^[^=\\u0000]+$" },
                        "additionalProperties": { "type": "string", "pattern": "^[^\\u0000]*$" }
                    },
                    "allow_internet_access": { "type": ["boolean", "null"] },
                    "secure": {
                        "description": "Accepted and ignored: every sandbox requires its access token"
                    },
                    "autoPause": { "type": ["boolean", "null"] },
                    "volumeMounts": {
                        "type": ["array", "null"],
                        "description": "Volumes of the caller's team to mount, by name, at absolute paths",
                        "items": {
                            "type": "object", "required": ["name", "path"], "additionalProperties": false,
                            "properties": { "name": { "type": "string" }, "path": { "type": "string" } }
                        }
                    },
                    "autoPauseMemory": {
                        "type": ["boolean", "null"],
                        "description": "false: the pause at the end time keeps only the filesystem"
                    },
                    "network": schema("NetworkConfig")
                }
            },
            "Sandbox": {
                "type": "object",
                "required": ["templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken"],
                "properties": sandbox
            },
            "ListedSandbox": {
                "type": "object",
                "required": listed_required,
                "properties": listed
            },
            "SandboxDetail": {
                "type": "object",
                "required": detail_required,
                "properties": detail
            },
            "SandboxMetric": {
                "type": "object",
                "required": ["timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed",
                    "memTotal", "memCache", "diskUsed", "diskTotal"],
                "properties": {
                    "timestamp": { "type": "string", "format": "date-time" },
                    "timestampUnix": { "type": "integer" },
                    "cpuCount": { "type": "integer", "minimum": 0 },
                    "cpuUsedPct": { "type": "number", "minimum": 0 },
                    "memUsed": { "type": "integer", "minimum": 0 },
                    "memTotal": { "type": "integer", "minimum": 0 },
                    "memCache": { "type": "integer", "minimum": 0 },
                    "diskUsed": { "type": "integer", "minimum": 0 },
                    "diskTotal": { "type": "integer", "minimum": 0 }
                }
            },
            "Timeout": {
                "type": "object",
                "properties": { "timeout": seconds("Seconds from now") }
            },
            "RequiredTimeout": {
                "type": "object",
                "required": ["timeout"],
                "properties": {
                    "timeout": { "type": "integer", "minimum": 0, "maximum": i64::MAX, "description": "Seconds from now" }
                }
            },
            "Refresh": {
                "type": "object",
                "properties": { "duration": seconds("Seconds from now") }
            },
            "PoolSizes": {
                "type": "object",
                "additionalProperties": false,
                "description": "`size` alone (min = max), or `min` and/or `max`",
                "properties": {
                    "min": { "type": ["integer", "null"], "minimum": 0, "maximum": MAX_POOL_SIZE },
                    "max": { "type": ["integer", "null"], "minimum": 0, "maximum": MAX_POOL_SIZE },
                    "size": { "type": ["integer", "null"], "minimum": 0, "maximum": MAX_POOL_SIZE }
                }
            },
            "Pool": {
                "type": "object",
                "required": ["templateID", "name", "min", "max", "target", "ready", "starting",
                    "stopping", "demand", "zygote"],
                "properties": {
                    "templateID": { "type": "string" },
                    "name": { "type": "string" },
                    "min": { "type": "integer", "minimum": 0 },
                    "max": { "type": "integer", "minimum": 0 },
                    "target": { "type": "integer", "minimum": 0 },
                    "ready": { "type": "integer", "minimum": 0 },
                    "starting": { "type": "integer", "minimum": 0 },
                    "stopping": { "type": "integer", "minimum": 0 },
                    "demand": { "type": "integer", "minimum": 0 },
                    "zygote": {
                        "type": ["object", "null"],
                        "required": ["pid", "kernels"],
                        "properties": {
                            "pid": { "type": "integer" },
                            "kernels": { "type": "integer", "minimum": 0 }
                        }
                    }
                }
            },
            "TemplateBuildRequest": {
                "type": "object",
                "description": "`name` (or E2B's older `alias`) is required",
                "properties": {
                    "name": { "type": ["string", "null"] },
                    "alias": { "type": ["string", "null"] },
                    "tags": { "type": ["array", "null"], "items": { "type": "string" } },
                    "cpuCount": { "type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX },
                    "memoryMB": { "type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX }
                },
                "anyOf": [{ "required": ["name"] }, { "required": ["alias"] }]
            },
            "TemplateBuildRequested": {
                "type": "object",
                "required": ["templateID", "buildID", "public", "names", "aliases", "tags"],
                "properties": {
                    "templateID": { "type": "string" },
                    "buildID": { "type": "string" },
                    "public": { "type": "boolean" },
                    "names": { "type": "array", "items": { "type": "string" } },
                    "aliases": { "type": "array", "items": { "type": "string" } },
                    "tags": { "type": "array", "items": { "type": "string" } }
                }
            },
            "TemplateStep": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": { "type": "string", "description": "RUN, COPY, ENV, WORKDIR or USER" },
                    "args": { "type": ["array", "null"], "items": { "type": "string" } },
                    "filesHash": { "type": ["string", "null"] },
                    "force": { "type": ["boolean", "null"] }
                }
            },
            "TemplateBuildStart": {
                "type": "object",
                "properties": {
                    "fromImage": { "type": ["string", "null"] },
                    "fromTemplate": { "type": ["string", "null"] },
                    "fromImageRegistry": { "description": "Refused: hutch pulls no images (yet)" },
                    "steps": { "type": ["array", "null"], "items": schema("TemplateStep") },
                    "startCmd": { "type": ["string", "null"] },
                    "readyCmd": { "type": ["string", "null"] }
                }
            },
            "TemplateBuildFileUpload": {
                "type": "object",
                "required": ["present"],
                "properties": {
                    "present": { "type": "boolean" },
                    "url": { "type": "string", "description": "Where to PUT the archive, when it is not present" }
                }
            },
            "BuildLogEntry": {
                "type": "object",
                "required": ["timestamp", "level", "message"],
                "properties": {
                    "timestamp": { "type": "string", "format": "date-time" },
                    "level": { "type": "string", "enum": ["info", "warn", "error"] },
                    "message": { "type": "string" },
                    "step": { "type": "string" }
                }
            },
            "TemplateBuildStatus": {
                "type": "object",
                "required": ["templateID", "buildID", "status", "logs", "logEntries"],
                "properties": {
                    "templateID": { "type": "string" },
                    "buildID": { "type": "string" },
                    "status": { "type": "string", "enum": ["waiting", "building", "ready", "error"] },
                    "logs": { "type": "array", "items": { "type": "string" } },
                    "logEntries": { "type": "array", "items": schema("BuildLogEntry") },
                    "reason": {
                        "type": "object",
                        "required": ["message"],
                        "properties": {
                            "message": { "type": "string" },
                            "step": { "type": ["string", "null"] }
                        }
                    }
                }
            },
            "Template": {
                "type": "object",
                "required": template_required,
                "properties": template_fields
            },
            "TemplateDetail": {
                "type": "object",
                "required": template_required,
                "properties": template_detail
            },
            "TemplateAlias": {
                "type": "object",
                "required": ["templateID", "public"],
                "properties": {
                    "templateID": { "type": "string" },
                    "public": { "type": "boolean" }
                }
            },
            "Health": {
                "type": "object",
                "required": ["status", "sandboxes", "templates"],
                "properties": {
                    "status": { "type": "string", "enum": ["building", "ready", "failed"] },
                    "progress": {
                        "type": ["object", "null"],
                        "description": "The default templates' build, while it runs",
                        "properties": {
                            "template": { "type": "string" },
                            "phase": { "type": "string" },
                            "done": { "type": "integer" },
                            "total": { "type": "integer" },
                            "message": { "type": "string" }
                        }
                    },
                    "error": { "type": "string" },
                    "sandboxes": { "type": "integer", "minimum": 0 },
                    "templates": { "type": "array", "items": { "type": "string" } }
                }
            }
        }
    });
    if let (Some(schemas), Value::Object(keys)) = (c["schemas"].as_object_mut(), key_schemas()) {
        schemas.extend(keys);
    }
    for more in [snapshot_schemas(), volume_schemas(), network_schemas()] {
        if let (Some(schemas), Value::Object(more)) = (c["schemas"].as_object_mut(), more) {
            schemas.extend(more);
        }
    }
    c
}

/// The schemas of volumes.
fn volume_schemas() -> Value {
    json!({
        "NewVolume": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "description": "Unique in the team" }
            }
        },
        "Volume": {
            "type": "object",
            "required": ["volumeID", "name"],
            "properties": { "volumeID": { "type": "string" }, "name": { "type": "string" } }
        },
        "VolumeAndToken": {
            "type": "object",
            "required": ["volumeID", "name", "token"],
            "properties": {
                "volumeID": { "type": "string" },
                "name": { "type": "string" },
                "token": { "type": "string", "description": "The bearer token of the volume content API" },
                "domain": { "type": "string" }
            }
        },
        "VolumeEntryStat": {
            "type": "object",
            "required": ["name", "type", "path", "size", "mode", "uid", "gid", "atime", "mtime", "ctime"],
            "properties": {
                "name": { "type": "string" },
                "type": { "type": "string", "enum": ["file", "directory", "symlink", "unknown"] },
                "path": { "type": "string" },
                "size": { "type": "integer", "minimum": 0 },
                "mode": { "type": "integer", "minimum": 0 },
                "uid": { "type": "integer", "minimum": 0 },
                "gid": { "type": "integer", "minimum": 0 },
                "atime": { "type": "string", "format": "date-time" },
                "mtime": { "type": "string", "format": "date-time" },
                "ctime": { "type": "string", "format": "date-time" },
                "target": { "type": "string" }
            }
        },
        "VolumeMetadata": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "uid": { "type": ["integer", "null"], "minimum": 0, "maximum": 65535 },
                "gid": { "type": ["integer", "null"], "minimum": 0, "maximum": 65535 },
                "mode": { "type": ["integer", "null"], "minimum": 0, "maximum": 4095 }
            }
        }
    })
}

/// The `path` query parameter of the volume content API.
fn volume_path_param() -> Value {
    query_param(
        "path",
        "A path in the volume",
        json!({ "type": "string", "minLength": 1 }),
    )
}

/// The owner query parameters of the volume content API, then `force` described as given.
fn volume_owner_params(force: &str) -> Vec<Value> {
    let id = |name: &str, d: &str| {
        query_param(
            name,
            d,
            json!({ "type": "integer", "minimum": 0, "maximum": 65535 }),
        )
    };
    vec![
        id("uid", "Owner as sandboxes see it (default 1000, `user`)"),
        id("gid", "Group as sandboxes see it (default 1000)"),
        query_param(
            "mode",
            "Permission bits",
            json!({ "type": "integer", "minimum": 0, "maximum": 4095 }),
        ),
        query_param("force", force, json!({ "type": "boolean" })),
    ]
}

/// The paths of volumes and of the volume content API.
fn volume_paths() -> Value {
    let id = || path_param("volumeID", "The volume's id");
    let content_auth = json!([{ "BearerAuth": [] }]);
    let stat = || body("The entry", schema("VolumeEntryStat"));
    let content_errors: [(&str, &str); 3] = [
        ("404", "No such path"),
        ("401", "Not the volume's token"),
        ("507", "The volume is full"),
    ];
    let binary = json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } });
    let mut mkdir_params = vec![id(), volume_path_param()];
    mkdir_params.extend(volume_owner_params(
        "Make missing parents; an existing directory is fine",
    ));
    let mut put_params = vec![id(), volume_path_param()];
    put_params.extend(volume_owner_params(
        "false: refuse to replace an existing file",
    ));
    json!({
        "/volumes": {
            "post": {
                "operationId": "createVolume",
                "requestBody": json_body(schema("NewVolume"), true),
                "responses": responses(&[("201", body("The volume", schema("VolumeAndToken")))], &[("409", "The team has a volume of this name")])
            },
            "get": {
                "operationId": "listVolumes",
                "responses": responses(&[("200", body("The team's volumes", json!({ "type": "array", "items": schema("Volume") })))], &[])
            }
        },
        "/volumes/{volumeID}": {
            "get": {
                "operationId": "getVolume",
                "parameters": [id()],
                "responses": responses(&[("200", body("The volume", schema("VolumeAndToken")))], &[("404", "No such volume")])
            },
            "delete": {
                "operationId": "deleteVolume",
                "parameters": [id()],
                "responses": responses(&[("204", no_content("Destroyed, with its files"))], &[("404", "No such volume"), ("409", "Sandboxes mount it")])
            }
        },
        "/volumecontent/{volumeID}/dir": {
            "get": {
                "operationId": "listVolumeDir",
                "security": content_auth,
                "parameters": [id(), volume_path_param(), query_param("depth", "Levels to list (default 1)", json!({ "type": "integer", "minimum": 1, "maximum": 32 }))],
                "responses": responses(&[("200", body("The entries", json!({ "type": "array", "items": schema("VolumeEntryStat") })))], &content_errors)
            },
            "post": {
                "operationId": "makeVolumeDir",
                "security": content_auth,
                "parameters": mkdir_params,
                "responses": responses(&[("201", stat())], &[("404", "No such parent"), ("401", "Not the volume's token"), ("409", "It exists"), ("507", "The volume is full")])
            }
        },
        "/volumecontent/{volumeID}/path": {
            "get": {
                "operationId": "statVolumePath",
                "security": content_auth,
                "parameters": [id(), volume_path_param()],
                "responses": responses(&[("200", stat())], &content_errors)
            },
            "patch": {
                "operationId": "setVolumePathMetadata",
                "security": content_auth,
                "parameters": [id(), volume_path_param()],
                "requestBody": json_body(schema("VolumeMetadata"), false),
                "responses": responses(&[("200", stat())], &content_errors)
            },
            "delete": {
                "operationId": "removeVolumePath",
                "security": content_auth,
                "parameters": [id(), volume_path_param()],
                "responses": responses(&[("204", no_content("Removed (a directory with all below it)"))], &content_errors)
            }
        },
        "/volumecontent/{volumeID}/file": {
            "get": {
                "operationId": "readVolumeFile",
                "security": content_auth,
                "parameters": [id(), volume_path_param()],
                "responses": responses(&[("200", json!({ "description": "The file's bytes", "content": binary }))], &content_errors)
            },
            "put": {
                "operationId": "writeVolumeFile",
                "security": content_auth,
                "parameters": put_params,
                "requestBody": { "required": false, "content": binary },
                "responses": responses(&[("201", stat())], &[("404", "No such directory"), ("401", "Not the volume's token"), ("409", "It exists (force=false)"), ("507", "The volume is full")])
            }
        }
    })
}

/// The schemas of snapshots and forks.
fn snapshot_schemas() -> Value {
    json!({
        "SnapshotRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": {
                    "type": ["string", "null"],
                    "description": "The snapshot template's name (lowercase letters, digits, '-', '_', '.'; a ':tag' is dropped). A snapshot of that name already in the team gets a new build; without a name the snapshot is known by its id"
                },
                "memory": {
                    "type": ["boolean", "null"],
                    "description": "hutch snapshots keep the filesystem only: true is refused with 400"
                }
            }
        },
        "SnapshotInfo": {
            "type": "object",
            "required": ["snapshotID", "names"],
            "properties": {
                "snapshotID": { "type": "string", "description": "`<team>/<name>:default` for a named snapshot, else `<templateID>:default`; what `Sandbox.create` takes" },
                "names": { "type": "array", "items": { "type": "string" } }
            }
        },
        "ForkRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "timeout": seconds("Lifetime of the forks in seconds (default 15)"),
                "count": {
                    "type": ["integer", "null"], "minimum": 1, "maximum": crate::builds::snapshot::MAX_FORKS,
                    "description": "How many sandboxes to start (default 1)"
                }
            }
        },
        "ForkResult": {
            "type": "object",
            "description": "One fork: `sandbox` when it started, `error` when not",
            "properties": {
                "sandbox": { "$ref": "#/components/schemas/Sandbox" },
                "error": { "$ref": "#/components/schemas/Error" }
            }
        }
    })
}

/// The paths of snapshots and forks.
fn snapshot_paths() -> Value {
    json!({
        "/sandboxes/{sandboxID}/snapshots": {
            "post": {
                "operationId": "createSnapshot",
                "summary": "Keeps the sandbox's filesystem (frozen for the copy) as a snapshot template; processes and memory are not kept",
                "parameters": [sandbox_id()],
                "requestBody": json_body(schema("SnapshotRequest"), false),
                "responses": responses(&[("201", body("The snapshot", schema("SnapshotInfo")))], &[
                    ("404", "No such sandbox")
                ])
            }
        },
        "/snapshots": {
            "get": {
                "operationId": "listSnapshots",
                "summary": "The team's snapshots, oldest first; `x-next-token` names the next page",
                "parameters": [
                    query_param("sandboxID", "Only the snapshots of this sandbox", json!({ "type": "string" })),
                    query_param("name", "Only the snapshot of this name (`name` or `<team>/<name>[:tag]`)", json!({ "type": "string" })),
                    query_param("limit", "Page size", json!({ "type": "integer", "minimum": 1, "maximum": 100 })),
                    query_param("nextToken", "Where the page starts (from `x-next-token`)", json!({ "type": "string" }))
                ],
                "responses": responses(&[("200", body("The snapshots", json!({ "type": "array", "items": schema("SnapshotInfo") })))], &[])
            }
        },
        "/sandboxes/{sandboxID}/fork": {
            "post": {
                "operationId": "forkSandbox",
                "summary": "Starts `count` sandboxes from a copy of the sandbox's filesystem (taken once, with the sandbox frozen for the copy); they boot afresh: no processes or memory are carried",
                "parameters": [sandbox_id()],
                "requestBody": json_body(schema("ForkRequest"), false),
                "responses": responses(&[("201", body("One entry per fork", json!({ "type": "array", "items": schema("ForkResult") })))], &[
                    ("404", "No such sandbox")
                ])
            }
        }
    })
}

/// The schemas of a sandbox's `network` options (see docs/egress.md).
fn network_schemas() -> Value {
    let egress = json!({
        "allowOut": {
            "type": ["array", "null"], "items": { "type": "string" },
            "description": "IPv4 addresses, CIDR blocks and domains (`example.com`, `*.example.com`: subdomains at any depth, not the apex) that are allowed; allowed beats denied. A domain needs `0.0.0.0/0` in `denyOut` (or `allow_internet_access` false) and is matched on the TLS SNI or HTTP Host of each connection by hutch's egress proxy, which connects to the name as the server resolves it"
        },
        "denyOut": {
            "type": ["array", "null"], "items": { "type": "string" },
            "description": "IPv4 addresses and CIDR blocks that are denied (`0.0.0.0/0`: everything not allowed)"
        },
        "rules": {
            "type": ["object", "null"],
            "description": "Header transforms by domain (exact, or `*.` for subdomains; the exact rule wins, then the longest wildcard): plain-HTTP requests and HTTPS requests to a matching, allowed host get the headers set (replacing same-named ones). HTTPS is terminated by the proxy with a certificate of hutch's egress CA, which such sandboxes trust (their system bundle); at most 10 domains, 1 rule each, 20 headers a rule",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "transform": {
                            "type": ["object", "null"],
                            "properties": {
                                "headers": { "type": ["object", "null"], "additionalProperties": { "type": "string" } }
                            }
                        }
                    }
                }
            }
        },
        "dnsServers": {
            "type": ["array", "null"], "items": { "type": "string" },
            "description": "IPv4 nameservers reachable when `allowOut` holds a domain (default `8.8.8.8`)"
        },
        "egressProxy": {
            "type": ["object", "null"],
            "description": "A bring-your-own SOCKS5 proxy: refused with 400 (E2B Cloud's)"
        }
    });
    let mut create = egress.clone();
    if let (Some(c), Value::Object(more)) = (
        create.as_object_mut(),
        json!({
            "allowPublicTraffic": {
                "type": ["boolean", "null"],
                "description": "false: the sandbox's ports other than the agent's answer only requests carrying its `trafficAccessToken` in `E2B-Traffic-Access-Token` (403 otherwise)"
            },
            "maskRequestHost": {
                "type": ["string", "null"],
                "description": "The `Host` requests reaching the sandbox's ports through the router carry; `${PORT}` is replaced by the port"
            },
            "httpsPorts": {
                "type": ["array", "null"], "items": { "type": "integer", "minimum": 1, "maximum": 65535 },
                "description": "Ports whose service serves TLS: the router speaks TLS to them (certificates not checked); not 49983"
            }
        }),
    ) {
        c.extend(more);
    }
    let mut update = egress;
    if let Some(u) = update.as_object_mut() {
        u.insert(
            "allow_internet_access".into(),
            json!({ "type": ["boolean", "null"], "description": "false: everything is denied but `allowOut`; left out: unchanged" }),
        );
    }
    json!({
        "NetworkConfig": { "type": ["object", "null"], "properties": create },
        "NetworkUpdate": { "type": "object", "properties": update }
    })
}

/// The paths of a sandbox's network options.
fn network_paths() -> Value {
    json!({
        "/sandboxes/{sandboxID}/network": {
            "put": {
                "operationId": "updateSandboxNetwork",
                "summary": "Replaces the running sandbox's egress options (what is left out is cleared); connections open through the proxy keep their verdict, every new one follows the new rules",
                "parameters": [sandbox_id()],
                // No body is an empty update: everything cleared, as `{}`.
                "requestBody": json_body(schema("NetworkUpdate"), false),
                "responses": responses(&[("204", json!({ "description": "Updated" }))], &[
                    ("404", "No such sandbox"),
                    ("409", "The sandbox is paused")
                ])
            }
        }
    })
}

/// The schemas of the key API, and of pause (kept apart: one `json!` of everything is too
/// deep).
fn key_schemas() -> Value {
    json!({
        "PauseRequest": {
            "type": "object",
            "properties": {
                "memory": {
                    "type": ["boolean", "null"],
                    "description": "false: keep only the filesystem (every process ends and the sandbox's memory, cgroup, disk and network are freed; resuming boots it again on its files); otherwise its processes are frozen"
                },
                "requireHealthyGuest": { "type": ["boolean", "null"], "description": "Accepted; hutch pauses whether or not the agent answers" }
            }
        },
        "ConnectRequest": {
            "type": "object",
            "properties": {
                "timeout": seconds("Seconds from now"),
                "memory": {
                    "type": ["boolean", "null"],
                    "description": "false: a sandbox paused with memory boots again on its files instead of being thawed"
                }
            }
        },
        "KeyName": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" }
            }
        },
        "IdentifierMaskingDetails": {
            "type": "object",
            "required": ["prefix", "valueLength", "maskedValuePrefix", "maskedValueSuffix"],
            "properties": {
                "prefix": { "type": "string" },
                "valueLength": { "type": "integer", "minimum": 0 },
                "maskedValuePrefix": { "type": "string" },
                "maskedValueSuffix": { "type": "string" }
            }
        },
        "TeamAPIKey": {
            "type": "object",
            "required": ["id", "name", "mask", "createdAt"],
            "properties": {
                "id": { "type": "string" },
                "name": { "type": "string" },
                "mask": { "$ref": "#/components/schemas/IdentifierMaskingDetails" },
                "createdAt": { "type": "string", "format": "date-time" },
                "createdBy": { "type": "null", "description": "hutch has no users" },
                "lastUsed": { "type": "null", "description": "Not tracked" }
            }
        },
        "CreatedTeamAPIKey": {
            "type": "object",
            "required": ["id", "key", "name", "mask", "createdAt"],
            "properties": {
                "id": { "type": "string" },
                "key": { "type": "string", "description": "The key itself, shown this once" },
                "name": { "type": "string" },
                "mask": { "$ref": "#/components/schemas/IdentifierMaskingDetails" },
                "createdAt": { "type": "string", "format": "date-time" },
                "createdBy": { "type": "null" },
                "lastUsed": { "type": "null" }
            }
        }
    })
}

fn list_params(v2: bool) -> Value {
    let p = vec![
        query_param(
            "metadata",
            "Only sandboxes with this metadata: `key=value&key2=value2`, each part percent-encoded",
            json!({ "type": "string" }),
        ),
        json!({
            "name": "state", "in": "query", "required": false, "style": "form", "explode": false,
            "description": if v2 { "States to list (default: all)" } else { "States to list (default: running)" },
            "schema": { "type": "array", "items": schema("SandboxState") }
        }),
        query_param(
            "order",
            "By start time",
            json!({ "type": "string", "enum": ["asc", "desc"] }),
        ),
        query_param(
            "startedAfter",
            "Only sandboxes started after this time",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query_param(
            "template",
            "Only sandboxes of this template",
            json!({ "type": "string" }),
        ),
        query_param(
            "nextToken",
            "Where the previous page ended (its `x-next-token` header)",
            json!({ "type": "string" }),
        ),
        query_param(
            "limit",
            "Most sandboxes in one page",
            json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
        ),
    ];
    Value::Array(p)
}

fn list_op(v2: bool) -> Value {
    json!({
        "get": {
            "operationId": if v2 { "listSandboxesV2" } else { "listSandboxes" },
            "summary": "The caller's team's sandboxes",
            "parameters": list_params(v2),
            "responses": responses(&[("200", json!({
                "description": "The sandboxes (one page of them with `limit`)",
                "headers": {
                    "x-next-token": {
                        "description": "Present when more pages follow",
                        "schema": { "type": "string" }
                    }
                },
                "content": json_content(json!({ "type": "array", "items": schema("ListedSandbox") }))
            }))], &[])
        },
        "post": {
            "operationId": if v2 { "createSandboxV2" } else { "createSandbox" },
            "summary": "Creates a sandbox from a template (from a warm pool when one is ready)",
            "requestBody": json_body(schema("NewSandbox"), true),
            "responses": responses(
                &[("201", body("The new sandbox", schema("Sandbox")))],
                &[
                    ("404", "No such template"),
                    ("429", "The key's or team's sandbox limit is reached: retry after a sandbox ends"),
                    ("503", "Full, or the template is still building: retry later"),
                ],
            )
        }
    })
}

fn connect_op(v2: bool) -> Value {
    json!({
        "post": {
            "operationId": if v2 { "connectSandboxV2" } else { "connectSandbox" },
            "summary": "Connects to a sandbox, resuming it if paused; `timeout` extends its life",
            "parameters": [sandbox_id()],
            "requestBody": json_body(schema("ConnectRequest"), false),
            "responses": responses(
                &[
                    ("200", body("The sandbox was running", schema("Sandbox"))),
                    ("201", body("The sandbox was paused and is resumed", schema("Sandbox"))),
                ],
                &[("404", "No such sandbox"), ("503", "The server is full: retry later")],
            )
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let health = json!({
        "get": {
            "operationId": "health",
            "summary": "Whether sandboxes can be created, and the default templates' build",
            "security": [],
            "responses": {
                "200": body("Sandboxes can be created", schema("Health")),
                "503": body("The default templates are still building (or failed)", schema("Health")),
                "405": error("Not with this method")
            }
        }
    });
    let openapi = json!({
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": { "description": "The OpenAPI document", "content": { "application/json": {} } },
                "405": error("Not with this method")
            }
        }
    });
    let sandbox = json!({
        "get": {
            "operationId": "getSandbox",
            "parameters": [sandbox_id()],
            "responses": responses(&[("200", body("The sandbox", schema("SandboxDetail")))], &[("404", "No such sandbox")])
        },
        "delete": {
            "operationId": "killSandbox",
            "parameters": [sandbox_id()],
            "responses": responses(&[("204", no_content("Killed"))], &[("404", "No such sandbox")])
        }
    });
    let timeout = json!({
        "post": {
            "operationId": "setSandboxTimeout",
            "summary": "The sandbox ends this many seconds from now",
            "parameters": [sandbox_id()],
            "requestBody": json_body(schema("RequiredTimeout"), true),
            "responses": responses(&[("204", no_content("Set"))], &[("404", "No such sandbox")])
        }
    });
    let refreshes = json!({
        "post": {
            "operationId": "refreshSandbox",
            "summary": "Keeps the sandbox alive for `duration` more seconds",
            "parameters": [sandbox_id()],
            "requestBody": json_body(schema("Refresh"), false),
            "responses": responses(&[("204", no_content("Refreshed"))], &[("404", "No such sandbox")])
        }
    });
    let pause = json!({
        "post": {
            "operationId": "pauseSandbox",
            "parameters": [sandbox_id()],
            "requestBody": json_body(schema("PauseRequest"), false),
            "responses": responses(&[("204", no_content("Paused"))], &[
                ("404", "No such sandbox"), ("409", "Already paused")
            ])
        }
    });
    let resume = json!({
        "post": {
            "operationId": "resumeSandbox",
            "parameters": [sandbox_id()],
            "requestBody": json_body(schema("Timeout"), false),
            "responses": responses(&[("201", body("Resumed", schema("Sandbox")))], &[
                ("404", "No such sandbox"), ("409", "Not paused"), ("503", "The server is full: retry later")
            ])
        }
    });
    let metrics = json!({
        "get": {
            "operationId": "getSandboxMetrics",
            "parameters": [
                sandbox_id(),
                query_param("start", "Unix seconds: samples from then on", json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX })),
                query_param("end", "Unix seconds: samples up to then", json!({ "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX }))
            ],
            "responses": responses(&[("200", body("Samples, oldest first", json!({ "type": "array", "items": schema("SandboxMetric") })))], &[("404", "No such sandbox")])
        }
    });
    let admin = [("403", "Not an admin key")];
    let pools = json!({
        "get": {
            "operationId": "listPools",
            "summary": "Every configured warm pool (hutch's own; admin keys only)",
            "responses": responses(&[("200", body("The pools", json!({ "type": "array", "items": schema("Pool") })))], &admin)
        }
    });
    let pool = json!({
        "get": {
            "operationId": "getPool",
            "parameters": [path_param("template", "A default template's name or a template's id")],
            "responses": responses(&[("200", body("The pool (sizes 0 when it has none)", schema("Pool")))], &[
                ("403", "Not an admin key"), ("404", "No such template")
            ])
        },
        "put": {
            "operationId": "setPool",
            "summary": "Sets a pool's sizes; it fills or shrinks in the background",
            "parameters": [path_param("template", "A default template's name or a template's id")],
            "requestBody": json_body(schema("PoolSizes"), true),
            "responses": responses(&[("200", body("The pool", schema("Pool")))], &[
                ("403", "Not an admin key"), ("404", "No such template")
            ])
        }
    });
    let team_header = json!({
        "name": "X-Team-ID", "in": "header", "required": false,
        "description": "Another team's keys (default: the admin key's own team)",
        "schema": { "type": "string" }
    });
    let key_id = path_param("apiKeyID", "A key's id (`hutch keys list`)");
    let team_param = path_param("teamID", "A team's name");
    let no_team = ("404", "No such team");
    let no_key = ("404", "No such team, or no such key in it");
    let created = responses(
        &[("201", body("The new key", schema("CreatedTeamAPIKey")))],
        &[admin[0], no_team],
    );
    let revoked = responses(&[("204", no_content("Revoked"))], &[admin[0], no_key]);
    let api_keys = json!({
        "get": {
            "operationId": "listTeamApiKeys",
            "summary": "The team's unrevoked keys, masked (admin keys only)",
            "parameters": [team_header.clone()],
            "responses": responses(&[("200", body("The keys", json!({ "type": "array", "items": schema("TeamAPIKey") })))], &[admin[0], no_team])
        },
        "post": {
            "operationId": "createTeamApiKey",
            "summary": "A new key of the team; the answer is the only time it is shown (admin keys only)",
            "parameters": [team_header.clone()],
            "requestBody": json_body(schema("KeyName"), true),
            "responses": created.clone()
        }
    });
    let api_key = json!({
        "patch": {
            "operationId": "renameTeamApiKey",
            "parameters": [key_id.clone(), team_header.clone()],
            "requestBody": json_body(schema("KeyName"), true),
            "responses": responses(&[("200", no_content("Renamed"))], &[admin[0], no_key])
        },
        "delete": {
            "operationId": "deleteTeamApiKey",
            "summary": "Revokes a key: requests with it are refused from then on",
            "parameters": [key_id.clone(), team_header],
            "responses": revoked.clone()
        }
    });
    let admin_keys = json!({
        "post": {
            "operationId": "adminCreateTeamApiKey",
            "parameters": [team_param.clone()],
            "requestBody": json_body(schema("KeyName"), true),
            "responses": created
        }
    });
    let admin_key = json!({
        "delete": {
            "operationId": "adminDeleteTeamApiKey",
            "parameters": [team_param, key_id],
            "responses": revoked
        }
    });
    let v3_templates = json!({
        "post": {
            "operationId": "requestTemplateBuild",
            "requestBody": json_body(schema("TemplateBuildRequest"), true),
            "responses": responses(&[("202", body("The build is requested", schema("TemplateBuildRequested")))], &[
                ("409", "The template is being built")
            ])
        }
    });
    let templates = json!({
        "get": {
            "operationId": "listTemplates",
            "summary": "The templates the caller's team built",
            "responses": responses(&[("200", body("The templates", json!({ "type": "array", "items": schema("Template") })))], &[])
        }
    });
    let template = json!({
        "get": {
            "operationId": "getTemplate",
            "parameters": [template_id()],
            "responses": responses(&[("200", body("The template", schema("TemplateDetail")))], &[("404", "No such template")])
        },
        "delete": {
            "operationId": "deleteTemplate",
            "parameters": [template_id()],
            "responses": responses(&[("204", no_content("Deleted"))], &[("404", "No such template")])
        }
    });
    let alias = json!({
        "get": {
            "operationId": "getTemplateByAlias",
            "parameters": [path_param("alias", "A template's name")],
            "responses": responses(&[("200", body("The template with this name", schema("TemplateAlias")))], &[("404", "No such template")])
        }
    });
    let hash_param = path_param("hash", "The SHA-256 (hex) the SDK computed for a COPY step");
    let files = json!({
        "get": {
            "operationId": "getTemplateFiles",
            "parameters": [template_id(), hash_param.clone()],
            "responses": responses(&[("201", body("Whether the archive is there, and where to upload it", schema("TemplateBuildFileUpload")))], &[
                ("404", "No such template, or no build of it asked for these files")
            ])
        }
    });
    let upload = json!({
        "put": {
            "operationId": "uploadTemplateFiles",
            "summary": "The archive of a COPY step (the `url` of the files call, with its token)",
            "security": [],
            "parameters": [
                template_id(), hash_param,
                json!({ "name": "token", "in": "query", "required": true, "schema": { "type": "string" } })
            ],
            "requestBody": {
                "required": true,
                "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
            },
            "responses": {
                "200": { "description": "Stored" },
                "400": error("Not a usable archive, or no such hash"),
                "401": error("A wrong or missing token"),
                "404": error("No such template"),
                "405": error("Not with this method"),
                "409": error("Already uploaded"),
                "413": error("Too large, or the team's upload quota is spent"),
                "500": error("The server failed")
            }
        }
    });
    let build_start = json!({
        "post": {
            "operationId": "startTemplateBuild",
            "parameters": [template_id(), path_param("buildID", "The build's id")],
            "requestBody": json_body(schema("TemplateBuildStart"), true),
            "responses": responses(&[("202", no_content("Started"))], &[
                ("404", "No such template or build"), ("409", "The build was started already")
            ])
        }
    });
    let build_status = json!({
        "get": {
            "operationId": "getTemplateBuildStatus",
            "parameters": [
                template_id(), path_param("buildID", "The build's id"),
                query_param("logsOffset", "Log entries to skip", json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX }))
            ],
            "responses": responses(&[("200", body("The build's status and its log entries from the offset on", schema("TemplateBuildStatus")))], &[
                ("404", "No such template or build")
            ])
        }
    });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hutch",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control plane of hutch: E2B's sandbox and template API as hutch implements it, and hutch's own warm pools. Sandbox traffic (the agent's envd API, ports) goes through the same listener, routed by the `E2B-Sandbox-Id` and `E2B-Sandbox-Port` headers or the host name; it is not described here.",
            "license": { "name": "Apache-2.0" }
        },
        "security": [{ "ApiKeyAuth": [] }, { "BearerAuth": [] }],
        "paths": {
            "/health": health,
            "/openapi.json": openapi,
            "/sandboxes": list_op(false),
            "/v2/sandboxes": list_op(true),
            "/sandboxes/{sandboxID}": sandbox,
            "/sandboxes/{sandboxID}/connect": connect_op(false),
            "/v2/sandboxes/{sandboxID}/connect": connect_op(true),
            "/sandboxes/{sandboxID}/timeout": timeout,
            "/sandboxes/{sandboxID}/refreshes": refreshes,
            "/sandboxes/{sandboxID}/pause": pause,
            "/sandboxes/{sandboxID}/resume": resume,
            "/sandboxes/{sandboxID}/metrics": metrics,
            "/pools": pools,
            "/pools/{template}": pool,
            "/api-keys": api_keys,
            "/api-keys/{apiKeyID}": api_key,
            "/admin/teams/{teamID}/api-keys": admin_keys,
            "/admin/teams/{teamID}/api-keys/{apiKeyID}": admin_key,
            "/v3/templates": v3_templates,
            "/templates": templates,
            "/templates/{templateID}": template,
            "/templates/aliases/{alias}": alias,
            "/templates/{templateID}/files/{hash}": files,
            "/templates/{templateID}/files/{hash}/upload": upload,
            "/v2/templates/{templateID}/builds/{buildID}": build_start,
            "/templates/{templateID}/builds/{buildID}/status": build_status
        },
        "components": components()
    });
    for more in [snapshot_paths(), volume_paths(), network_paths()] {
        if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), more) {
            paths.extend(more);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/a/{x}/b` and `/a/{y}/b` are the same route.
    fn shape(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let src = include_str!("api.rs");
        let mut routed: Vec<String> = src
            .match_indices(".route(")
            .filter_map(|(i, _)| {
                let rest = src[i..].split_once('"')?.1;
                Some(shape(rest.split_once('"')?.0))
            })
            .collect();
        routed.sort();
        routed.dedup();
        let doc = document();
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| shape(p))
            .collect();
        documented.sort();
        assert_eq!(routed, documented);
    }

    #[test]
    fn every_reference_resolves() {
        let text = document_text();
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name = text[i + 21..].split('"').next().unwrap();
            assert!(
                schemas.contains_key(name),
                "{name} is referenced but not defined"
            );
        }
    }
}
