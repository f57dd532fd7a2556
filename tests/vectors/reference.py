#!/usr/bin/env python3
"""Independent reference implementation of cairn identity v1 (FORMAT.md §2 and §3).

Written from FORMAT.md alone, without looking at the Rust sources, to show that the document is
precise enough to implement elsewhere. Requires Python >= 3.11 and the PyPI package `blake3`.

    python3 reference.py check    identity-v1.json   # verify every vector
    python3 reference.py generate identity-v1.json   # recompute cbor/identity of non-error vectors
    python3 reference.py id < request.json           # print the document (hex) and identity
"""
import json
import struct
import sys

from blake3 import blake3

INT_MIN, INT_MAX = -(2**64), 2**64 - 1
MAX_DEPTH = 127


class CairnError(Exception):
    """An input refused by FORMAT.md; `kind` is the error class used by the test vectors."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# ---- §2 canonical values -----------------------------------------------------------------------

def reduce_float(x):
    """§2.3: NaN/±inf refused; an integral float in the integer range becomes that integer."""
    if x != x or x in (float("inf"), float("-inf")):
        raise CairnError("float-overflow", f"non-finite float {x!r}")
    if x.is_integer() and INT_MIN <= int(x) <= INT_MAX:
        return int(x)
    return x


def canonical(v, depth=0):
    """Check a parsed JSON value against §2 and apply numeric reduction; returns the new value."""
    if isinstance(v, (list, dict)):
        depth += 1
        if depth > MAX_DEPTH:
            raise CairnError("too-deep", f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(v, list):
            return [canonical(x, depth) for x in v]
        return {k: canonical(x, depth) for k, x in v.items()}
    if isinstance(v, bool) or v is None or isinstance(v, (str, bytes)):
        return v
    if isinstance(v, int):
        if not INT_MIN <= v <= INT_MAX:
            raise CairnError("integer-out-of-range", str(v))
        return v
    if isinstance(v, float):
        return reduce_float(v)
    raise CairnError("invalid-value", f"not a canonical value: {v!r}")


def head(major, arg):
    """Initial byte plus the shortest argument (RFC 8949 §4.2.1)."""
    if arg < 24:
        return bytes([major << 5 | arg])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if arg < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, arg)
    raise CairnError("integer-out-of-range", str(arg))


def encode_float(x):
    """Shortest of half/single/double that gives back exactly the same double bits."""
    bits = struct.pack(">d", x)
    for prefix, fmt in ((0xF9, ">e"), (0xFA, ">f")):
        try:
            small = struct.pack(fmt, x)
        except OverflowError:
            continue
        if struct.pack(">d", struct.unpack(fmt, small)[0]) == bits:
            return bytes([prefix]) + small
    return b"\xfb" + bits


def encode(v):
    """Canonical CBOR of a canonical value (the result of `canonical`)."""
    if v is None:
        return b"\xf6"
    if v is False or v is True:
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, float):
        return encode_float(v)
    if isinstance(v, str):
        try:
            b = v.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate from a "\ud800" escape
            raise CairnError("invalid-json", f"text is not valid Unicode: {e}") from None
        return head(3, len(b)) + b
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, dict):
        # Canonical key order is the bytewise order of the encoded keys (§2.2).
        entries = sorted((encode(k), encode(x)) for k, x in v.items())
        return head(5, len(v)) + b"".join(k + x for k, x in entries)
    raise CairnError("invalid-value", f"not a canonical value: {v!r}")


# ---- JSON text → values ------------------------------------------------------------------------

def _pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise CairnError("duplicate-key", f"duplicate key {k!r}")
        if k == "$serde_json::private::Number":
            raise CairnError("reserved-key", f"reserved key {k!r}")
        obj[k] = v
    return obj


def _int(literal):
    n = int(literal)
    if not INT_MIN <= n <= INT_MAX:
        raise CairnError("integer-out-of-range", f"integer literal {literal} out of range")
    return n


def _float(literal):
    x = float(literal)  # nearest double, round half to even
    if x in (float("inf"), float("-inf")):
        raise CairnError("float-overflow", f"number literal {literal} overflows a double")
    return x


def _constant(name):
    raise CairnError("invalid-json", f"{name} is not JSON")


def parse_json(text):
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_int=_int,
                          parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise CairnError("invalid-json", str(e)) from None
    except RecursionError:
        raise CairnError("too-deep", "nesting too deep for the parser") from None


# ---- §3 identity v1 ----------------------------------------------------------------------------

def strip(config, defaults):
    """§3.2 step 2: remove what equals the defaults, recursing into maps on both sides."""
    out = {}
    for k, v in config.items():
        if k in defaults:
            d = defaults[k]
            if encode(v) == encode(d):
                continue
            if isinstance(v, dict) and isinstance(d, dict):
                v = strip(v, d)
                if not v:
                    continue
        out[k] = v
    return out


def remove_path(config, segments):
    """§3.2 step 1: walk maps along all segments but the last, then drop the last key."""
    m = config
    for seg in segments[:-1]:
        m = m.get(seg)
        if not isinstance(m, dict):
            return
    m.pop(segments[-1], None)


def document(request):
    """The identity document (§3.3) of a request already made canonical by `canonical`."""
    if not isinstance(request, dict):
        raise CairnError("invalid-request", "the request is not a JSON object")
    module = request.get("module")
    if not isinstance(module, str):
        raise CairnError("invalid-request", "module must be text")
    if module == "":
        raise CairnError("empty-module", "module is empty")
    config = request.get("config", {})
    predicate = request.get("predicate", {})
    if not isinstance(predicate, dict):
        raise CairnError("predicate-not-map", f"predicate is {type(predicate).__name__}")
    schema = request.get("schema", {})
    if not isinstance(schema, dict):
        raise CairnError("invalid-schema", "schema is not a map")
    unknown = set(schema) - {"defaults", "non_identifying", "label"}
    if unknown:
        raise CairnError("invalid-schema", f"unknown schema keys {sorted(unknown)}")
    defaults = schema.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CairnError("invalid-schema", "defaults is not a map")
    paths = schema.get("non_identifying", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise CairnError("invalid-schema", "non_identifying is not a list of text")
    split = [p.split(".") for p in paths]
    if any("" in segs for segs in split):
        raise CairnError("invalid-schema", "a non-identifying path has an empty segment")
    if isinstance(config, dict):
        for segs in split:
            remove_path(config, segs)
        config = strip(config, defaults)
    return {"v": 1, "config": config, "module": module, "predicate": predicate}


def identity_of_json(text):
    """(document CBOR bytes, identity hex) of a request given as JSON text."""
    # The whole request is checked and reduced (§2): the depth limit counts its outer map too.
    cbor = encode(document(canonical(parse_json(text))))
    return cbor, blake3(cbor).hexdigest()


# ---- command line ------------------------------------------------------------------------------

def run_vector(vec):
    """Returns None when the vector holds, else a description of the mismatch."""
    try:
        cbor, ident = identity_of_json(vec["input"])
    except CairnError as e:
        if e.kind == vec.get("error"):
            return None
        return f"expected {vec.get('error') or 'success'}, got error {e}"
    if "error" in vec:
        return f"expected error {vec['error']}, got identity {ident}"
    if cbor.hex() != vec["cbor"]:
        return f"cbor\n    expected {vec['cbor']}\n    actual   {cbor.hex()}"
    if ident != vec["identity"]:
        return f"identity\n    expected {vec['identity']}\n    actual   {ident}"
    return None


def main(argv):
    if len(argv) == 2 and argv[1] == "id":
        cbor, ident = identity_of_json(sys.stdin.read())
        print(cbor.hex())
        print(ident)
        return 0
    if len(argv) != 3 or argv[1] not in ("check", "generate"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[2], encoding="utf-8") as f:
        vectors = json.load(f)
    if argv[1] == "generate":
        out = []
        for vec in vectors:
            entry = {"name": vec["name"], "input": vec["input"]}
            if "error" in vec:
                entry["error"] = vec["error"]
            else:
                cbor, ident = identity_of_json(vec["input"])
                entry["cbor"], entry["identity"] = cbor.hex(), ident
            out.append(entry)
        with open(argv[2], "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    passed = failed = 0
    for vec in vectors if argv[1] == "check" else out:
        problem = run_vector(vec)
        if problem is None:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {vec['name']}: {problem}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
