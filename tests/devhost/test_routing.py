"""Route templates match the way the Functions host (ASP.NET routing) matches them."""

import pytest

from devhost.routing import RouteTable, RouteTemplateError


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
