# node-gyp build of the addon for an installed package (`npm install` runs
# tools/install.js, which runs `node-gyp rebuild`).  It links the installed
# shared libegress found by pkg-config, with a run path to pkg-config's
# libdir so the addon loads with no LD_LIBRARY_PATH; loader.js opens it with
# RTLD_DEEPBIND so that libegress's c-ares calls bind to the system
# libcares.so.2, not the node binary's own copy.  Only the public API
# (egress.h) is used.  Offline: npm_config_nodedir=/usr reads the headers of
# the installed Node from /usr/include/node (tools/install.js sets it when
# those headers match the running node).  A source checkout builds the
# addon with meson instead (bindings/node/meson.build).
{
  'targets': [
    {
      'target_name': 'egress_node',
      # The same sources as bindings/node/meson.build; uv/ holds the libuv
      # adapter (lib/uv/egress_uv.c and its header, copied by npm's prepack:
      # tools/vendor-uv.js), compiled against the uv.h of node's headers.
      'sources': [
        'src/convert.c',
        'src/lifetime.c',
        'src/module.c',
        'src/packed.c',
        'uv/egress_uv.c',
      ],
      'include_dirs': ['uv'],
      # _GNU_SOURCE as meson's build: uv.h needs POSIX types under -std=c11.
      'defines': ['NAPI_VERSION=8', '_GNU_SOURCE'],
      'cflags': [
        '-std=c11',
        '-fvisibility=hidden',
        '<!@(pkg-config --cflags libegress)',
      ],
      'libraries': ['<!@(pkg-config --libs libegress)'],
      'ldflags': [
        '-Wl,-rpath,<!(pkg-config --variable=libdir libegress)',
        '-Wl,--version-script,<(module_root_dir)/src/egress_node.map',
      ],
    },
  ],
}
