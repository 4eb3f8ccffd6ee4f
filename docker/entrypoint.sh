#!/bin/bash
# zoobox container entrypoint: give the running uid a passwd entry, set up the Ascend
# environment when the image has it, then run the command
# (`docker run IMAGE python -m models.x.y ...`).
#
# - passwd / group: the docker runner starts containers as the caller's uid:gid, which the
#   image does not know. getpwuid() fails for such a uid, and HCCL's initialisation with it
#   (HcclGetRootInfo, error code 19). Without an entry, one is written to a private copy
#   of /etc/passwd and /etc/group that nss_wrapper (libnss-wrapper, LD_PRELOAD) serves;
#   /etc/passwd itself stays read-only.
# - CANN toolkit: /usr/local/Ascend/ascend-toolkit/set_env.sh (absent in CPU images)
# - the AIE runtime: /usr/local/Ascend/aie/set_env.sh (the aie image)
#   Each set_env.sh is sourced from its own folder: they locate their installation from
#   the working directory.
# - the host's driver, mounted read-only at /usr/local/Ascend/driver (or $ASCEND_DRIVER_HOME):
#   its lib64, lib64/common and lib64/driver go on LD_LIBRARY_PATH.
# The set_env.sh scripts are sourced without `set -e`: a non-zero status inside them must not
# stop the container before the stage can say what is wrong.
# ZOOBOX_ASCEND_ROOT, ZOOBOX_NSS_DIR and ZOOBOX_NSS_WRAPPER_LIB stand in other places for
# /usr/local/Ascend, the private passwd folder and the library (tests use them).

ensure_passwd_entry() {
    local uid gid dir lib name
    uid="$(id -u)"
    gid="$(id -g)"
    if getent passwd "$uid" >/dev/null 2>&1; then
        return 0
    fi
    name="zoobox-$uid"
    if [ -w /etc/passwd ]; then  # a root-run container: the entry can go in place
        echo "$name:x:$uid:$gid:zoobox caller:${HOME:-/tmp}:/bin/bash" >>/etc/passwd
        return 0
    fi
    lib="${ZOOBOX_NSS_WRAPPER_LIB:-}"
    if [ -z "$lib" ]; then
        for candidate in /usr/lib/*/libnss_wrapper.so /usr/lib64/libnss_wrapper.so \
            /usr/lib/libnss_wrapper.so; do
            if [ -f "$candidate" ]; then
                lib="$candidate"
                break
            fi
        done
    fi
    if [ -z "$lib" ] || [ ! -f "$lib" ]; then
        echo "zoobox-entrypoint: uid $uid has no passwd entry and libnss_wrapper is not" \
            "installed; HCCL and anything calling getpwuid() may fail (rebuild the image:" \
            "invoke images.build)" >&2
        return 0
    fi
    dir="${ZOOBOX_NSS_DIR:-/tmp/zoobox-nss-$uid}"
    if ! mkdir -p "$dir"; then
        echo "zoobox-entrypoint: cannot write $dir; uid $uid stays without a passwd entry" >&2
        return 0
    fi
    cat /etc/passwd >"$dir/passwd"
    echo "$name:x:$uid:$gid:zoobox caller:${HOME:-/tmp}:/bin/bash" >>"$dir/passwd"
    cat /etc/group >"$dir/group"
    for group in $(id -G); do
        if ! getent group "$group" >/dev/null 2>&1; then
            echo "zoobox-$group:x:$group:$name" >>"$dir/group"
        fi
    done
    export NSS_WRAPPER_PASSWD="$dir/passwd" NSS_WRAPPER_GROUP="$dir/group"
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
}

source_from_its_folder() {
    local here="$PWD"
    if cd "$(dirname "$1")"; then
        # shellcheck disable=SC1090
        . "$1"
        cd "$here" || true
    fi
}

ensure_passwd_entry

ascend="${ZOOBOX_ASCEND_ROOT:-/usr/local/Ascend}"
for script in "$ascend/ascend-toolkit/set_env.sh" "$ascend/aie/set_env.sh"; do
    if [ -f "$script" ]; then
        source_from_its_folder "$script"
    fi
done

driver="${ASCEND_DRIVER_HOME:-$ascend/driver}"
for lib in "$driver/lib64" "$driver/lib64/common" "$driver/lib64/driver"; do
    if [ -d "$lib" ]; then
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$lib:"*) ;;
            *) LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        esac
    fi
done
export LD_LIBRARY_PATH

if [ "$#" -eq 0 ]; then
    set -- python
fi
exec "$@"
