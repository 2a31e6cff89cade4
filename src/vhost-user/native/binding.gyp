{
  "targets": [
    {
      "target_name": "vhost_user_native",
      "sources": ["vhost_user_native.c", "io_ring.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
