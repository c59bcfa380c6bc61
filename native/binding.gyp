{
  "targets": [
    {
      "target_name": "mptcp_native",
      "sources": [
        "src/addon.c",
        "src/common.c",
        "src/socket-ops.c",
        "src/mptcp-info.c",
        "src/relay.c",
        "src/acceptor.c",
        "src/engine-only.c",
        "src/admission.c",
        "src/destination.c",
        "src/queue-cap.c",
        "src/http-head.c",
        "src/http-head-js.c",
        "src/chunked.c",
        "src/upstream-park.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "libraries": ["-lpthread"],
      "cflags_c": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
