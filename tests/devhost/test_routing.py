"""Route templates match the way the Functions host (ASP.NET routing) matches them."""

import pytest

from devhost.routing import BadRequestPath, RouteTable, RouteTemplateError, request_path


def table(*routes: str, prefix: str = "api") -> RouteTable[str]:
    t: RouteTable[str] = RouteTable(prefix)
    for route in routes:
        t.add(route, None, route)
    return t


def test_the_prefix_comes_first_and_may_be_empty():
    assert table("hello").match("GET", "/api/hello") == ("hello", {})
    assert table("hello").match("GET", "/hello") is None
    assert table("hello", prefix="").match("GET", "/hello") == ("hello", {})
    assert table("hello", prefix="v1/fn").match("GET", "/v1/fn/hello") == ("hello", {})


def test_parameters_capture_one_segment():
    assert table("score/{name}").match("POST", "/api/score/churn") == (
        "score/{name}", {"name": "churn"})
    assert table("score/{name}").match("POST", "/api/score/a/b") is None
    assert table("score/{name}").match("POST", "/api/score") is None


def test_matching_ignores_case_and_a_trailing_slash_but_keeps_the_values_case():
    assert table("Score/{name}").match("GET", "/API/score/MyModel/") == (
        "Score/{name}", {"name": "MyModel"})


def test_int_alpha_and_guid_constraints_reject_other_values():
    routes = table("n/{v:int}", "a/{v:alpha}", "g/{v:guid}")
    assert routes.match("GET", "/api/n/-42")[1] == {"v": "-42"}
    assert routes.match("GET", "/api/n/4x") is None
    assert routes.match("GET", "/api/a/abc")[1] == {"v": "abc"}
    assert routes.match("GET", "/api/a/ab1") is None
    guid = "0af76519-16cd-43dd-8448-eb211c80319c"
    assert routes.match("GET", f"/api/g/{guid}")[1] == {"v": guid}
    assert routes.match("GET", f"/api/g/{guid.replace('-', '')}")[1] == {"v": guid.replace("-", "")}
    assert routes.match("GET", "/api/g/not-a-guid") is None


@pytest.mark.parametrize("constraint,accepted,refused", [
    ("int", ["2147483647", "-2147483648"], ["2147483648", "1.5"]),  # Int32, as ASP.NET
    ("long", ["9223372036854775807"], ["9223372036854775808"]),
    ("bool", ["true", "FALSE"], ["yes", "1"]),
    ("double", ["1.5", "-2e3"], ["x"]),
    ("min(3)", ["3", "40"], ["2", "anything"]),
    ("max(3)", ["-1", "3"], ["4"]),
    ("range(2,4)", ["2", "4"], ["1", "5"]),
    ("minlength(2)", ["ab"], ["a"]),
    ("maxlength(2)", ["ab"], ["abc"]),
    ("length(2)", ["ab"], ["a", "abc"]),
    ("length(1,2)", ["a", "ab"], ["abc"]),
    ("regex(^[a-z]+\\d$)", ["ab1", "AB1"], ["ab12", "1"]),
    ("datetime", ["2026-11-25", "2026-11-25T10:00:00"], ["tomorrow"]),
    ("int:min(10)", ["10"], ["9", "x"]),  # every constraint of a parameter applies
])
def test_the_standard_constraints_check_the_value(constraint, accepted, refused):
    template = "v/{x:" + constraint + "}"
    routes = table(template, "v/{x}")  # the constrained route first, the plain one as fallback
    for value in accepted:
        assert routes.match("GET", f"/api/v/{value}") == (template, {"x": value})
    for value in refused:
        assert routes.match("GET", f"/api/v/{value}") == ("v/{x}", {"x": value})


@pytest.mark.parametrize("template", ["v/{x:nosuch}", "v/{x:min(a)}", "v/{x:range(1)}",
                                      "v/{x:regex([)}"])
def test_an_unknown_or_malformed_constraint_stops_the_app_loading(template):
    with pytest.raises(RouteTemplateError):
        table(template)


def test_routes_the_host_refuses_stop_the_app_loading():
    for reserved in ("admin/users", "Runtime/x", "administrators"):
        with pytest.raises(RouteTemplateError, match="admin' or 'runtime"):
            table(reserved)
    routes: RouteTable[str] = RouteTable("api")
    routes.add("items/{id}", ["get"], "read")
    routes.add("items/{id}", ["post"], "write")  # the same route for other methods: fine
    with pytest.raises(RouteTemplateError, match="also the route of another function"):
        routes.add("Items/{id}", ["GET", "put"], "again")
    with pytest.raises(RouteTemplateError):
        routes.add("items/{id}", None, "any method")


def test_optional_default_and_catch_all_parameters():
    routes = table("opt/{v?}", "dflt/{v=first}", "files/{*path}")
    assert routes.match("GET", "/api/opt") == ("opt/{v?}", {})
    assert routes.match("GET", "/api/opt/3") == ("opt/{v?}", {"v": "3"})
    assert routes.match("GET", "/api/dflt")[1] == {"v": "first"}
    assert routes.match("GET", "/api/files/a/b/c.txt")[1] == {"path": "a/b/c.txt"}
    assert routes.match("GET", "/api/files") == ("files/{*path}", {})


def test_segments_mixing_literals_and_parameters():
    assert table("f/{name}.{ext}").match("GET", "/api/f/model.json")[1] == {
        "name": "model", "ext": "json"}


def test_literal_segments_win_over_parameters_whatever_the_order():
    routes = table("items/{slug}", "items/{id:int}", "items/latest", "items/{*rest}")
    assert routes.match("GET", "/api/items/latest")[0] == "items/latest"
    assert routes.match("GET", "/api/items/7")[0] == "items/{id:int}"
    assert routes.match("GET", "/api/items/other")[0] == "items/{slug}"
    assert routes.match("GET", "/api/items/a/b")[0] == "items/{*rest}"


def test_methods_restrict_a_route_and_none_means_any_method():
    routes: RouteTable[str] = RouteTable("api")
    routes.add("thing", ["post"], "post-only")
    routes.add("any", None, "any")
    assert routes.match("POST", "/api/thing") == ("post-only", {})
    assert routes.match("GET", "/api/thing") is None
    assert routes.match("PATCH", "/api/any") == ("any", {})


def test_a_route_that_matches_the_path_but_not_the_method_lets_the_next_one_answer():
    routes: RouteTable[str] = RouteTable("api")
    routes.add("items/latest", ["POST"], "post latest")
    routes.add("items/{slug}", ["GET"], "get slug")
    assert routes.match("GET", "/api/items/latest") == ("get slug", {"slug": "latest"})


@pytest.mark.parametrize("template", ["{*rest}/tail", "a/{v?}/b", "a/{}", "a/{v"])
def test_invalid_templates_are_rejected(template):
    with pytest.raises(RouteTemplateError):
        table(template)


def test_constraint_arguments_may_hold_equals_signs_and_escaped_braces():
    # ASP.NET's own example: braces in a regex are doubled; an "=" inside (...) is the regex's.
    ssn = table("ssn/{ssn:regex(^\\d{{3}}-\\d{{2}}-\\d{{4}}$)}")
    assert ssn.match("GET", "/api/ssn/123-45-6789")[1] == {"ssn": "123-45-6789"}
    assert ssn.match("GET", "/api/ssn/12-345-6789") is None
    look = table("v/{v:regex(^(?=\\d)\\w+$)}", "d/{v:int=5}")
    assert look.match("GET", "/api/v/1ab")[1] == {"v": "1ab"} and look.match("GET", "/api/v/ab") is None
    assert look.match("GET", "/api/d")[1] == {"v": "5"}
    assert table("a{{b}}/{x}").match("GET", "/api/a{b}/1")[1] == {"x": "1"}


def test_file_and_nonfile_look_at_the_last_segment_as_asp_net_does():
    files = table("f/{*p:file}", "f/{*q}")
    assert files.match("GET", "/api/f/dir/model.json")[0] == "f/{*p:file}"
    assert files.match("GET", "/api/f/.env")[0] == "f/{*p:file}"
    assert files.match("GET", "/api/f/a.b/c")[0] == "f/{*q}"  # the dot is not in the last segment
    assert files.match("GET", "/api/f/name.")[0] == "f/{*q}"


def test_a_complex_segment_gives_the_right_hand_parameters_the_least():
    # ASP.NET matches a complex segment's literals from the right.
    routes = table("c/{a:regex(^\\d+-\\d+$)}-{b}", "c/{a}.{b}")
    assert routes.match("GET", "/api/c/1-2-x")[1] == {"a": "1-2", "b": "x"}
    assert routes.match("GET", "/api/c/a.b.c")[1] == {"a": "a.b", "b": "c"}


# -- catch-all parameters, as ASP.NET Core's RoutePatternMatcher matches them ----------------

def test_a_catch_all_takes_the_rest_of_the_path_slashes_included():
    routes = table("score/{*name}")
    assert routes.match("POST", "/api/score/churn") == ("score/{*name}", {"name": "churn"})
    assert routes.match("POST", "/api/score/churn/v2") == ("score/{*name}", {"name": "churn/v2"})
    assert routes.match("POST", "/api/score/a/b/c.txt")[1] == {"name": "a/b/c.txt"}
    # Taken as the path has it: a trailing "/" and inner "//" are part of the value ...
    assert routes.match("POST", "/api/score/churn/v2/")[1] == {"name": "churn/v2/"}
    assert routes.match("POST", "/api/score/a//b")[1] == {"name": "a//b"}
    # ... but an empty segment where the catch-all starts (or before it) matches nothing.
    assert routes.match("POST", "/api/score//a") is None
    assert routes.match("POST", "/api//score/a") is None
    # The literals before it still match case-insensitively; the value keeps its case.
    assert routes.match("POST", "/API/Score/Churn/V2")[1] == {"name": "Churn/V2"}


def test_a_catch_all_may_be_empty_its_default_filling_in():
    routes = table("score/{*name}", "files/{*path=index.html}", "two/{**rest}")
    assert routes.match("POST", "/api/score") == ("score/{*name}", {})
    assert routes.match("POST", "/api/score/") == ("score/{*name}", {})
    assert routes.match("GET", "/api/files")[1] == {"path": "index.html"}
    assert routes.match("GET", "/api/files/a/b")[1] == {"path": "a/b"}
    assert routes.match("GET", "/api/two/x/y")[1] == {"rest": "x/y"}  # "**": same matching
    assert routes.match("GET", "/api/scoreboard") is None  # the literal is a whole segment


def test_a_catch_all_is_tried_after_every_other_kind_of_segment():
    routes = table("v2/models/{*path}", "v2/models/{name}/infer", "v2/health/ready")
    assert routes.match("GET", "/api/v2/models/churn/infer") == (
        "v2/models/{name}/infer", {"name": "churn"})
    assert routes.match("GET", "/api/v2/models/churn/v2/infer") == (
        "v2/models/{*path}", {"path": "churn/v2/infer"})
    assert routes.match("GET", "/api/v2/health/ready")[0] == "v2/health/ready"


def test_a_catch_all_constraint_checks_the_whole_value():
    routes = table("c/{*p:regex(^[^0-9]+$)}", "c/{*q}")
    assert routes.match("GET", "/api/c/ab/cd") == ("c/{*p:regex(^[^0-9]+$)}", {"p": "ab/cd"})
    assert routes.match("GET", "/api/c/ab/c1") == ("c/{*q}", {"q": "ab/c1"})


@pytest.mark.parametrize("template", [
    "{*rest}/tail", "a/{*rest}/b", "a/{**rest}/b",  # a catch-all must be the last segment
    "a/x{*rest}", "a/{*rest}.txt",  # ... and a segment of its own
    "a/{*rest?}",  # it cannot be optional (it may already be empty)
    "a/{***rest}", "a//{*rest}", "a/{x}/{*X}",  # three stars; "//"; a name twice (any case)
])
def test_catch_all_templates_asp_net_refuses_stop_the_app_loading(template):
    with pytest.raises(RouteTemplateError):
        table(template)


# -- the path routes see: the raw path decoded as Kestrel decodes it -------------------------

@pytest.mark.parametrize("raw,path", [
    (b"/api/score/churn/v2", "/api/score/churn/v2"),
    (b"/api/score/a%20b", "/api/score/a b"),
    (b"/api/score/churn%2Fv2", "/api/score/churn%2Fv2"),  # an escaped "/" is never decoded
    (b"/api/score/churn%2fv2", "/api/score/churn%2fv2"),
    (b"/api/%41%62c", "/api/Abc"),
    (b"/api/%252F", "/api/%2F"),  # decoded once: "%25" is "%", not the start of an escape
    (b"/api/%zz%4", "/api/%zz%4"),  # not escapes: as written
    (b"/api/%C3%A9t%C3%A9", "/api/été"),  # escapes are UTF-8 sequences
    (b"/api/%F0%9F%98%80", "/api/\U0001F600"),
    (b"/api/%C3%28", "/api/%C3("),  # a broken sequence stays as written, the rest decoded
    (b"/api/%FF", "/api/%FF"),  # not a lead byte
    (b"/api/%C0%AF", "/api/%C0%AF"),  # an overlong "/"
    (b"/api/%ED%A0%80", "/api/%ED%A0%80"),  # a UTF-16 surrogate
    (b"/api/%F4%90%80%80", "/api/%F4%90%80%80"),  # beyond U+10FFFF
    (b"/api/\xc3\xa9", "/api/é"),  # raw UTF-8
    (b"/api/a/b/../c", "/api/a/c"),  # dot segments removed, after decoding
    (b"/api/a/%2E%2E/c", "/api/c"),
    (b"/api/a/./b/.", "/api/a/b/"),
    (b"/api/a%2F../b", "/api/a%2F../b"),  # "a%2F.." is one segment, not a dot segment
])
def test_the_request_path_is_decoded_as_kestrel_decodes_it(raw, path):
    assert request_path(raw) == path


def test_a_null_character_in_the_path_is_refused():
    with pytest.raises(BadRequestPath):
        request_path(b"/api/score/a%00b")


def test_names_with_slashes_reach_a_catch_all_and_escaped_slashes_stay_in_one_segment():
    routes = table("score/{*name}", "one/{name}")
    assert routes.match("POST", request_path(b"/api/score/churn/v2"))[1] == {"name": "churn/v2"}
    assert routes.match("POST", request_path(b"/api/score/churn%2Fv2"))[1] == {"name": "churn%2Fv2"}
    assert routes.match("GET", request_path(b"/api/one/churn%2Fv2"))[1] == {"name": "churn%2Fv2"}
    assert routes.match("GET", request_path(b"/api/one/churn/v2")) is None
    assert routes.match("POST", request_path(b"/api/score/x/%2E%2E")) == ("score/{*name}", {})
