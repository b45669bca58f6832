"""The bookstore gRPC service (gateway/tests/proto/bookstore/v1/bookstore.proto) on grpcio,
for the protocol translation tests (REST/JSON transcoding, gRPC-Web).

  bookstore_server.py [--descriptor-out FILE]   -> prints its port, serves until killed

The Python code and the descriptor set are generated when it starts, with grpcio-tools' bundled
protoc (`python -m grpc_tools.protoc`), into a temporary directory: nothing generated is
committed and nothing but `pip install grpcio-tools` is needed. `--descriptor-out` also writes
the descriptor set (`--include_imports`) to FILE, as a user would hand it to the gateway.

Behaviour (what the tests rely on):
  shelves 1 (Fiction) and 2 (History); books shelves/1/books/1 (Dune) and shelves/1/books/2;
  GetShelf/GetBook/DeleteShelf of an unknown id: NOT_FOUND "shelf N not found";
  every call echoes the request metadata `x-echo` as initial metadata `x-echo`;
  StreamBooks: the shelf's books, interval_ms apart, then fail_code if not 0;
  Fail: the code and message asked for, trailing metadata x-fail-reason: asked, and
  grpc-status-details-bin with google.rpc.BadRequest and google.rpc.ErrorInfo;
  Sleep: sleeps millis in steps, ends with DEADLINE_EXCEEDED when the deadline passes first.
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
FILES = [
    "bookstore/v1/bookstore.proto",
    "google/api/http.proto",
    "google/api/annotations.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]


def generate(out_dir, descriptor_out=None):
    """Generate the Python modules (and the descriptor set) with grpcio-tools' protoc."""
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}", f"-I{well_known}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
    ]
    if descriptor_out:
        args += ["--include_imports", f"--descriptor_set_out={descriptor_out}"]
    subprocess.run(args + FILES, check=True)
    sys.path.insert(0, out_dir)


def load():
    pb = importlib.import_module("bookstore.v1.bookstore_pb2")
    rpc = importlib.import_module("bookstore.v1.bookstore_pb2_grpc")
    status_pb2 = importlib.import_module("google.rpc.status_pb2")
    details_pb2 = importlib.import_module("google.rpc.error_details_pb2")
    return pb, rpc, status_pb2, details_pb2


def make_servicer(pb, rpc, status_pb2, details_pb2):
    from google.protobuf import empty_pb2

    lock = threading.Lock()
    shelves = {1: pb.Shelf(id=1, theme="Fiction"), 2: pb.Shelf(id=2, theme="History")}
    books = {
        (1, 1): pb.Book(name="shelves/1/books/1", author="Frank Herbert", title="Dune", genre=pb.FICTION,
                        page_count=412, tags=["classic"]),
        (1, 2): pb.Book(name="shelves/1/books/2", author="Ursula K. Le Guin", title="The Dispossessed",
                        genre=pb.FICTION, page_count=387),
    }

    def echo(context):
        for k, v in context.invocation_metadata():
            if k == "x-echo":
                context.send_initial_metadata((("x-echo", v),))

    def parse_book(name, context):
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "shelves" or parts[2] != "books":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad book name {name!r}")
        try:
            return int(parts[1]), int(parts[3])
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad book name {name!r}")

    class Bookstore(rpc.BookstoreServicer):
        def ListShelves(self, request, context):
            echo(context)
            with lock:
                return pb.ListShelvesResponse(shelves=[shelves[k] for k in sorted(shelves)])

        def CreateShelf(self, request, context):
            echo(context)
            with lock:
                sid = max(shelves, default=0) + 1
                shelf = pb.Shelf(id=sid, theme=request.shelf.theme)
                shelves[sid] = shelf
                return shelf

        def GetShelf(self, request, context):
            echo(context)
            with lock:
                if request.shelf not in shelves:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
                s = pb.Shelf()
                s.CopyFrom(shelves[request.shelf])
                s.book_count = sum(1 for (sh, _) in books if sh == request.shelf)
                return s

        def DeleteShelf(self, request, context):
            echo(context)
            with lock:
                if shelves.pop(request.shelf, None) is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
                return empty_pb2.Empty()

        def ListBooks(self, request, context):
            echo(context)
            with lock:
                out = [b for (sh, _), b in sorted(books.items()) if sh == request.shelf]
            if request.filter.author:
                out = [b for b in out if b.author == request.filter.author]
            if request.filter.genres:
                out = [b for b in out if b.genre in request.filter.genres]
            if request.tags:
                out = [b for b in out if set(request.tags) & set(b.tags)]
            if request.page_size:
                out = out[: request.page_size]
            return pb.ListBooksResponse(books=out)

        def CreateBook(self, request, context):
            echo(context)
            with lock:
                if request.shelf not in shelves:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
                bid = max([b for (s, b) in books if s == request.shelf], default=0) + 1
                book = pb.Book()
                book.CopyFrom(request.book)
                book.name = f"shelves/{request.shelf}/books/{bid}"
                books[(request.shelf, bid)] = book
                return book

        def GetBook(self, request, context):
            echo(context)
            key = parse_book(request.name, context)
            with lock:
                if key not in books:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"book {request.name} not found")
                return books[key]

        def UpdateBook(self, request, context):
            echo(context)
            key = parse_book(request.book.name, context)
            with lock:
                if key not in books:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"book {request.book.name} not found")
                book = books[key]
                paths = list(request.update_mask.paths) or ["author", "title", "genre", "page_count", "tags"]
                for p in paths:
                    if p == "tags":
                        del book.tags[:]
                        book.tags.extend(request.book.tags)
                    elif p in ("author", "title", "genre", "page_count"):
                        setattr(book, p, getattr(request.book, p))
                    else:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot update {p!r}")
                return book

        def MoveBook(self, request, context):
            echo(context)
            key = parse_book(request.name, context)
            with lock:
                if key not in books:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"book {request.name} not found")
                if request.other_shelf_id not in shelves:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"shelf {request.other_shelf_id} not found")
                book = books.pop(key)
                bid = max([b for (s, b) in books if s == request.other_shelf_id], default=0) + 1
                book.name = f"shelves/{request.other_shelf_id}/books/{bid}"
                books[(request.other_shelf_id, bid)] = book
                return book

        def StreamBooks(self, request, context):
            echo(context)
            with lock:
                out = [b for (sh, _), b in sorted(books.items()) if sh == request.shelf]
            for i, b in enumerate(out):
                if i and request.interval_ms:
                    time.sleep(request.interval_ms / 1000)
                yield b
            if request.fail_code:
                context.abort(code_of(request.fail_code), "stream failed as asked")

        def Fail(self, request, context):
            echo(context)
            bad = details_pb2.BadRequest(field_violations=[
                details_pb2.BadRequest.FieldViolation(field="code", description="asked to fail")])
            info = details_pb2.ErrorInfo(reason="ASKED", domain="bookstore.test", metadata={"code": str(request.code)})
            st = status_pb2.Status(code=request.code, message=request.message)
            st.details.add().Pack(bad)
            st.details.add().Pack(info)
            context.set_trailing_metadata((
                ("x-fail-reason", "asked"),
                ("grpc-status-details-bin", st.SerializeToString()),
            ))
            context.abort(code_of(request.code), request.message)

        def Sleep(self, request, context):
            echo(context)
            start = time.monotonic()
            deadline = start + request.millis / 1000
            while time.monotonic() < deadline:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while sleeping")
                if not context.is_active():
                    return pb.SleepResponse()
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            return pb.SleepResponse(slept_ms=int((time.monotonic() - start) * 1000))

        def Echo(self, request, context):
            echo(context)
            return request

    return Bookstore()


def code_of(n):
    """The grpc.StatusCode of a number."""
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c
    return grpc.StatusCode.UNKNOWN


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--descriptor-out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bookstore-gen-") as out:
        generate(out, args.descriptor_out)
        pb, rpc, status_pb2, details_pb2 = load()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        rpc.add_BookstoreServicer_to_server(make_servicer(pb, rpc, status_pb2, details_pb2), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        server.wait_for_termination()


if __name__ == "__main__":
    main()
