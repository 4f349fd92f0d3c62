"""A small hand-written synthesised environment: a library with books, members and loans.

It shows the effect language at work (the environment prompt quotes one of its effects as the example), and the
tests and the benchmark run on it. Five APIs: ``get_book`` (read), ``search_books`` (filter), ``checkout_book``
(a precondition on the member, an update of the book with a precondition, an insert of the loan with a generated
key, an add to the member's loan count), ``return_book`` (a delete, then an update of the book the deleted loan
named) and ``delete_member`` (a delete no ordinary goal asks for).
"""

from __future__ import annotations

from typing import Any

from schemas.environments import EnvironmentProposal
from schemas.records import APISpec
from tasks.environments.declarative import EnvironmentSpec


def _api(name: str, description: str, params: dict[str, Any], required: list[str],
         result: dict[str, Any]) -> APISpec:
    return APISpec(api_id=f"lib_{name}", name=name, description=description,
                   parameters={"type": "object", "properties": params, "required": required},
                   result_schema=result, domain="Library", node_ids=["library"], operators=[])


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}


def library_apis() -> list[APISpec]:
    book_id = {"type": "string", "description": "Id of the book, e.g. b1"}
    member_id = {"type": "string", "description": "Id of the member, e.g. m1"}
    return [
        _api("get_book", "Get a book's title, author and whether it is available.", {"book_id": book_id},
             ["book_id"], _obj({"book_id": STR, "title": STR, "author": STR, "available": BOOL})),
        _api("search_books", "Find the books whose author's name contains the text given.",
             {"author": {"type": "string", "description": "Part of the author's name"}}, ["author"],
             _obj({"books": {"type": "array", "items": _obj({"book_id": STR, "title": STR})}})),
        _api("checkout_book", "Lend an available book to an active member; returns the new loan's id.",
             {"book_id": book_id, "member_id": member_id}, ["book_id", "member_id"],
             _obj({"loan_id": INT, "book_id": STR})),
        _api("return_book", "Return a lent book by its loan id; the book becomes available again.",
             {"loan_id": {"type": "integer", "description": "Id of the loan"}}, ["loan_id"],
             _obj({"book_id": STR, "available": BOOL})),
        _api("delete_member", "Remove a member from the library.", {"member_id": member_id}, ["member_id"],
             _obj({"member_id": STR, "name": STR})),
    ]


def _ref(source: str, name: str | None = None, literal: Any = None) -> dict[str, Any]:
    return {"source": source, "name": name, "literal": literal}


def _step(operation: str, collection: str, key: dict[str, Any] | None, where: list[Any] | None = None,
          require: list[Any] | None = None, assignments: list[Any] | None = None) -> dict[str, Any]:
    return {"operation": operation, "collection": collection, "key": key, "where": where or [],
            "require": require or [], "assignments": assignments or []}


def _record(collection: str, **values: Any) -> dict[str, Any]:
    return {"collection": collection, "values": [{"field": k, "value": v} for k, v in values.items()]}


def library_proposal_data() -> dict[str, Any]:
    """The design as the LLM would answer it (a JSON-able dict of :class:`EnvironmentProposal`)."""
    field = lambda name, kind: {"name": name, "type": kind, "description": name.replace("_", " ")}  # noqa: E731
    return {
        "name": "library",
        "description": "A lending library: books, members and the loans between them.",
        "collections": [
            {"name": "books", "key_field": "book_id",
             "fields": [field("book_id", "string"), field("title", "string"), field("author", "string"),
                        field("available", "boolean")]},
            {"name": "members", "key_field": "member_id",
             "fields": [field("member_id", "string"), field("name", "string"), field("active", "boolean"),
                        field("loans_count", "integer")]},
            {"name": "loans", "key_field": "loan_id",
             "fields": [field("loan_id", "integer"), field("book_id", "string"), field("member_id", "string")]},
        ],
        "initial_records": [
            _record("books", book_id="b1", title="Dune", author="Frank Herbert", available=True),
            _record("books", book_id="b2", title="Emma", author="Jane Austen", available=False),
            _record("books", book_id="b3", title="Persuasion", author="Jane Austen", available=True),
            _record("members", member_id="m1", name="Ada", active=True, loans_count=1),
            _record("members", member_id="m2", name="Bob", active=False, loans_count=0),
            _record("loans", loan_id=1, book_id="b2", member_id="m1"),
        ],
        "effects": [
            {"api": "get_book", "steps": [_step("read", "books", _ref("argument", "book_id"))], "result_step": 0,
             "list_property": None,
             "returns": [{"name": n, "value": _ref("record", n)} for n in ("book_id", "title", "author", "available")]},
            {"api": "search_books",
             "steps": [_step("filter", "books", None, where=[{"field": "author", "op": "contains",
                                                              "value": _ref("argument", "author"),
                                                              "message": "no match"}])],
             "result_step": 0, "list_property": "books",
             "returns": [{"name": n, "value": _ref("record", n)} for n in ("book_id", "title")]},
            {"api": "checkout_book",
             "steps": [
                 _step("read", "members", _ref("argument", "member_id"),
                       require=[{"field": "active", "op": "eq", "value": _ref("literal", None, True),
                                 "message": "the member is not active"}]),
                 _step("update", "books", _ref("argument", "book_id"),
                       require=[{"field": "available", "op": "eq", "value": _ref("literal", None, True),
                                 "message": "the book is already on loan"}],
                       assignments=[{"field": "available", "op": "set", "value": _ref("literal", None, False)}]),
                 _step("insert", "loans", _ref("generated"),
                       assignments=[{"field": "book_id", "op": "set", "value": _ref("argument", "book_id")},
                                    {"field": "member_id", "op": "set", "value": _ref("argument", "member_id")}]),
                 _step("update", "members", _ref("argument", "member_id"),
                       assignments=[{"field": "loans_count", "op": "add", "value": _ref("literal", None, 1)}]),
             ],
             "result_step": 2, "list_property": None,
             "returns": [{"name": "loan_id", "value": _ref("record", "loan_id")},
                         {"name": "book_id", "value": _ref("record", "book_id")}]},
            {"api": "return_book",
             "steps": [
                 _step("delete", "loans", _ref("argument", "loan_id")),
                 _step("update", "books", _ref("previous", "book_id"),
                       assignments=[{"field": "available", "op": "set", "value": _ref("literal", None, True)}]),
             ],
             "result_step": 1, "list_property": None,
             "returns": [{"name": "book_id", "value": _ref("record", "book_id")},
                         {"name": "available", "value": _ref("record", "available")}]},
            {"api": "delete_member", "steps": [_step("delete", "members", _ref("argument", "member_id"))],
             "result_step": 0, "list_property": None,
             "returns": [{"name": n, "value": _ref("record", n)} for n in ("member_id", "name")]},
        ],
    }


def library_environment() -> EnvironmentSpec:
    proposal = EnvironmentProposal.model_validate(library_proposal_data())
    return EnvironmentSpec.from_proposal(proposal, library_apis())
