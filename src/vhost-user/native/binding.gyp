{
  "targets": [
    {
      "target_name": "vhost_user_native",
      "sources": ["vhost_user_native.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
