import pytest

from shoal.errors import InvalidRef
from shoal.ref import DEFAULT_HOST, ModelRef


# ollama's ParseName rules as a table (types/model/name.go): one row per rule
@pytest.mark.parametrize(
    ("text", "host", "namespace", "name", "tag"),
    [
        ("deepseek-r1:7b", DEFAULT_HOST, "library", "deepseek-r1", "7b"),  # defaults
        ("llama3", DEFAULT_HOST, "library", "llama3", "latest"),  # tag defaults to latest
        ("user/model:v1.2_q4-K", DEFAULT_HOST, "user", "model", "v1.2_q4-K"),  # ns/name
        ("registry.ollama.ai/library/qwen:0.5b", DEFAULT_HOST, "library", "qwen", "0.5b"),
        ("localhost:5000/ns/m", "localhost:5000", "ns", "m", "latest"),  # host:port
        ("localhost/m:t", DEFAULT_HOST, "localhost", "m", "t"),  # two parts: never a host
        ("hf.co/org/Model-GGUF:Q4_K_M", "hf.co", "org", "Model-GGUF", "Q4_K_M"),  # case kept
        ("10.0.0.1:8080/a/b:c", "10.0.0.1:8080", "a", "b", "c"),
        ("http://localhost:5000/ns/m:t", "localhost:5000", "ns", "m", "t"),  # scheme dropped
        ("https://example.com/eva/mistral:7b", "example.com", "eva", "mistral", "7b"),
        ("-name", DEFAULT_HOST, "library", "-name", "latest"),  # any allowed byte may lead
        ("name:-tag", DEFAULT_HOST, "library", "name", "-tag"),
        ("_x/y_:z.1", DEFAULT_HOST, "_x", "y_", "z.1"),
        ("a.b:c", DEFAULT_HOST, "library", "a.b", "c"),  # dots in a name
        ("a" * 113, DEFAULT_HOST, "library", "a" * 113, "latest"),  # library/...:latest: 128
    ],
)
def test_parse(text: str, host: str, namespace: str, name: str, tag: str) -> None:
    ref = ModelRef.parse(text)
    assert (ref.host, ref.namespace, ref.name, ref.tag) == (host, namespace, name, tag)
    assert ModelRef.parse(str(ref)) == ref


def test_forms() -> None:
    ref = ModelRef.parse("deepseek-r1:7b")
    assert str(ref) == "library/deepseek-r1:7b"
    assert ref.short == "library/deepseek-r1:7b"
    assert ref.slug == "deepseek-r1-7b"
    assert str(ModelRef.parse("h.io:99/a/b:c")) == "h.io:99/a/b:c"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://",
        "Foo:bar:baz",  # two tags
        "me/mymodel:1:2",
        "../x",
        "..",
        "a/../b",
        "a..b",  # two dots in a row, anywhere
        "./x",  # a namespace has no dot
        "Example.COM/m",  # two parts are namespace/name, and a namespace has no dot
        "x:",
        ":tag",
        "/x",
        "x/",
        "a//b",
        "a/b/c/d",  # at most host/namespace/name
        "a:b/c",  # ':' only in a host
        "na me",
        "name\x00",
        "n\u00e4me",
        "a" * 129,
        "a" * 114,  # shoal: library/<114>:latest is 129 bytes, would not parse back
        "x:" + "t" * 127,
        "example.com/mistral:7b+",  # shoal takes no build
        "example.com/eva/mistral:7b+Q4_0",
        "x/y/z/z:8n+I",
        "m@sha256-1234",  # nor a digest
        ".",  # shoal: a lone dot would be a path segment
        "h.io/ns/.",
        "host:0/a/b",  # shoal: a host must be a usable address
        "host:99999/a/b",
        "host:port/a/b",
        "bad_host!/a/b",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidRef) as exc:
        ModelRef.parse(text)
    assert "model reference" in exc.value.message


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidRef) as exc:
        ModelRef.parse("me/mymodel:1:2")
    assert "more than one ':tag'" in exc.value.message  # not "invalid name 'mymodel:1'"
    with pytest.raises(InvalidRef) as exc:
        ModelRef.parse("Example.COM/m")
    assert "invalid namespace 'Example.COM'" in exc.value.message
