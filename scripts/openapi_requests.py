#!/usr/bin/env python3
"""Checks recorded DevRev requests against DevRev's official OpenAPI files.

Usage: openapi_requests.py REQUESTS.jsonl OPENAPI_DIR

REQUESTS.jsonl holds one request a line, as the fake DevRev logs them (the e2e test
`lost::every_request_is_inside_the_openapi_schemas` writes it):
    {"method": "POST", "path": "/rev-users.get", "body": {...}, "beta": true}

OPENAPI_DIR holds `openapi-public.yaml` and `openapi-beta.yaml`. A request sent with
`X-Devrev-Scope: beta` ("beta": true) must follow the beta file, any other the public one.
Each body is checked two ways:
  - JSON Schema (draft 2020-12, `jsonschema` from PyPI) against the operation's request-body
    schema, with OpenAPI 3.0's `nullable` read as a null type;
  - strictly: every field must be one the schema declares (DevRev answers an unknown field
    with 400 invalid_field, while the schemas themselves allow extra properties).
Downloads (`/download/...`, pre-signed URLs, not DevRev API calls) are left out.

Prints one line per request outside the schemas and a summary; exits 1 if there is any.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import yaml


def nullable_to_type(node):
    """OpenAPI 3.0 `nullable: true` as JSON Schema's null type, everywhere in `node`."""
    if isinstance(node, dict):
        out = {k: nullable_to_type(v) for k, v in node.items()}
        if out.pop("nullable", False):
            if "type" in out:
                t = out["type"]
                out["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            else:
                out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [nullable_to_type(v) for v in node]
    return node


def discriminated(node):
    """OpenAPI's `discriminator` over a `oneOf` as JSON Schema: the variant named by the
    discriminating property's value (through `mapping`) is the one the body must follow;
    without the property, the mapping's `none` variant. (Plain `oneOf` would refuse a body
    that two variants both accept.)"""
    if isinstance(node, dict):
        out = {k: discriminated(v) for k, v in node.items()}
        d = out.get("discriminator")
        if d and "oneOf" in out and d.get("mapping"):
            prop = d["propertyName"]
            mapping = d["mapping"]
            del out["oneOf"]
            rules = []
            for value, ref in mapping.items():
                cond = {"properties": {prop: {"const": value}}, "required": [prop]}
                if value == "none":
                    cond = {"not": {"required": [prop]}}
                rules.append({"if": cond, "then": {"$ref": ref}})
            named = [v for v in mapping if v != "none"]
            rules.append({"if": {"required": [prop]},
                          "then": {"properties": {prop: {"enum": named}}}})
            out["allOf"] = out.get("allOf", []) + rules
        return out
    if isinstance(node, list):
        return [discriminated(v) for v in node]
    return node


class Spec:
    def __init__(self, path):
        doc = yaml.safe_load(Path(path).read_text())
        self.raw = nullable_to_type(doc)
        self.doc = discriminated(self.raw)
        self.schemas = self.raw["components"]["schemas"]

    def deref(self, s):
        while isinstance(s, dict) and "$ref" in s:
            s = self.schemas[s["$ref"].rsplit("/", 1)[-1]]
        return s

    def request_schema(self, path, method):
        op = self.doc["paths"].get(path, {}).get(method.lower())
        if op is None:
            return None
        if method.upper() == "GET":
            props = {p["name"]: p.get("schema", {}) for p in op.get("parameters", [])}
            return {"type": "object", "properties": props}
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        return body.get("schema", {"type": "object", "properties": {}})

    def properties(self, s):
        """The declared properties of an object schema (through $ref and allOf), or None
        when the schema declares no closed set (free-form objects such as custom_fields)."""
        s = self.deref(s)
        if not isinstance(s, dict):
            return None
        props = dict(s.get("properties", {}))
        parts = s.get("allOf", [])
        for part in parts:
            more = self.properties(part)
            if more is None:
                return None
            props.update(more)
        if not props and not parts:
            return None
        if s.get("additionalProperties") not in (None, False):
            return None
        return props

    def unknown_fields(self, body, schema, where=""):
        """Fields of `body` the schema does not declare, as dotted paths."""
        s = self.deref(schema)
        found = []
        if isinstance(body, dict):
            d = s.get("discriminator") if isinstance(s, dict) else None
            if d and d.get("mapping") and "oneOf" in s:
                # The variant the discriminating value names, plus the base's own fields.
                value = body.get(d["propertyName"], "none")
                ref = d["mapping"].get(value)
                if ref is None:
                    return []
                variant = self.properties({"$ref": ref}) or {}
                base = dict(s.get("properties", {}))
                merged = {"type": "object", "properties": {**base, **variant}}
                return self.unknown_fields(body, merged, where)
            for alt in ("oneOf", "anyOf"):
                if isinstance(s, dict) and alt in s:
                    # The field set of whichever alternative names the most of the body.
                    best = None
                    for option in s[alt]:
                        miss = self.unknown_fields(body, option, where)
                        if best is None or len(miss) < len(best):
                            best = miss
                    return best or []
            props = self.properties(s)
            if props is None:
                return []
            for k, v in body.items():
                path = f"{where}.{k}" if where else k
                if k not in props:
                    found.append(path)
                else:
                    found += self.unknown_fields(v, props[k], path)
        elif isinstance(body, list) and isinstance(s, dict) and "items" in s:
            for i, v in enumerate(body):
                found += self.unknown_fields(v, s["items"], f"{where}[{i}]")
        return found

    def problems(self, path, method, body):
        schema = self.request_schema(path, method)
        if schema is None:
            return [f"no {method} {path} in the spec"]
        root = dict(schema)
        root["components"] = self.doc["components"]
        v = jsonschema.Draft202012Validator(root)
        out = [f"{'.'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
               for e in v.iter_errors(body)]
        out += [f"{f}: not a field of the request schema" for f in self.unknown_fields(body, schema)]
        return out


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    requests_file, spec_dir = Path(argv[1]), Path(argv[2])
    specs = {
        False: Spec(spec_dir / "openapi-public.yaml"),
        True: Spec(spec_dir / "openapi-beta.yaml"),
    }
    checked = Counter()
    bad = 0
    for line in requests_file.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r["path"].startswith("/download/"):
            continue
        body = r.get("body")
        if body is None:
            body = {}
        scope = "beta" if r.get("beta") else "public"
        checked[(r["path"], scope)] += 1
        for p in specs[bool(r.get("beta"))].problems(r["path"], r["method"], body):
            bad += 1
            print(f"OUTSIDE {scope} {r['method']} {r['path']}: {p}  body={json.dumps(body)[:300]}")
    total = sum(checked.values())
    print(f"{total} request(s) checked against DevRev's OpenAPI files, {bad} outside the schemas")
    for (path, scope), n in sorted(checked.items()):
        print(f"  {n:5}  {scope:6}  {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
