#!/bin/sh
# imagebuild-launch: the entrypoint of every baked image. See docs/launcher.md.
#
# 1. Picks the environment: the variable the recipe names (IMAGEBUILD_ENV by
#    default), else the first environment whose detect rule matches (hostname
#    pattern, file that exists), else the recipe's detect.default; otherwise
#    it refuses to start. An unknown name is refused too.
# 2. Exports that environment's config; a variable already set when the
#    container starts wins. Exports FEATURE_<NAME>=on|off; FEATURE_<NAME> given
#    at start (on/off, true/false, 1/0) overrides the baked toggle.
# 3. Takes each declared secret from NAME or from the file NAME_FILE names, and
#    refuses to start, naming them, when any is missing. Values are never printed.
# 4. Writes config.json and features.json to a writable directory
#    (IMAGEBUILD_RUN_DIR, /run/imagebuild, /tmp/imagebuild-UID or /dev/shm/...)
#    and exports IMAGEBUILD_RUN_DIR.
# 5. Sizes the server to the CPUs the container may use (WEB_CONCURRENCY),
#    gives nginx, which reads no variables, a copy of its config with PORT and
#    LOG_LEVEL applied, prints one line to stderr, and execs the server so it
#    is PID 1 and gets the container's signals.
#
# POSIX sh and a few coreutils only: images without Python (nginx, java) run it too.
set -eu

dir=${IMAGEBUILD_CONFIG_DIR:-/etc/imagebuild}
me=imagebuild-launch
nl='
'
tab=$(printf '\t')
cr=$(printf '\r')

fail() {
    printf '%s: %s\n' "$me" "$*" >&2
    exit 64
}

is_set() {
    eval "[ -n \"\${$1+x}\" ]"
}

value_of() {  # value_of NAME: sets $value to $NAME, empty when unset
    eval "value=\${$1-}"
}

[ -r "$dir/environments" ] || fail "$dir/environments is missing; this image was not baked by imagebuild"
known=
while IFS= read -r line; do
    known="$known${known:+, }$line"
done < "$dir/environments"

# --- 1. the environment -------------------------------------------------------

variable=IMAGEBUILD_ENV
default=
detect_rules() { :; }
[ ! -r "$dir/detect.sh" ] || . "$dir/detect.sh"

host=$(uname -n 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null || echo "${HOSTNAME:-}")
env_name=
how=
rule() {  # rule NAME HOSTNAME-PATTERN FILE: all given conditions must hold
    [ -z "$env_name" ] || return 0
    if [ -n "$2" ]; then
        # shellcheck disable=SC2254  # the pattern is meant to be a pattern
        case $host in $2) ;; *) return 0 ;; esac
    fi
    if [ -n "$3" ]; then
        [ -e "$3" ] || return 0
    fi
    env_name=$1
    how="detected:${2:+ hostname $2}${3:+ file $3}"
}

value_of "$variable"
if [ -n "$value" ]; then
    env_name=$value
    how="from $variable"
else
    detect_rules
    if [ -z "$env_name" ] && [ -n "$default" ]; then
        env_name=$default
        how="default"
    fi
fi
[ -n "$env_name" ] || fail "no environment named or detected (hostname '$host'); set $variable to one of: $known" \
    "(e.g. docker run -e $variable=${known%%,*}), or give the recipe detect.default"
case $env_name in
    *[!A-Za-z0-9_.-]*|.*) fail "$variable='$env_name' is not an environment name; this image knows: $known" ;;
esac
[ -r "$dir/env/$env_name.sh" ] || fail "unknown environment '$env_name' ($how); this image knows: $known;" \
    "set $variable to one of them"

# --- 2, 3. config, feature toggles, secrets ------------------------------------

json_quote() {  # json_quote TEXT: sets $quoted to TEXT as a JSON string
    rest=$1
    out=
    while [ -n "$rest" ]; do
        case $rest in
            *[[:cntrl:]\"\\]*) ;;
            *) out=$out$rest; break ;;
        esac
        plain=${rest%%[[:cntrl:]\"\\]*}
        out=$out$plain
        rest=${rest#"$plain"}
        char=${rest%"${rest#?}"}
        rest=${rest#?}
        case $char in
            \") out="$out\\\"" ;;
            \\) out="$out\\\\" ;;
            "$nl") out="$out\\n" ;;
            "$tab") out="$out\\t" ;;
            "$cr") out="$out\\r" ;;
            *) out=$out$(printf '\\u%04x' "'$char") ;;
        esac
    done
    quoted="\"$out\""
}

overrides=
config_json=
config() {  # config NAME VALUE
    if is_set "$1"; then
        overrides="$overrides${overrides:+,}$1"
    else
        export "$1=$2"
    fi
    value_of "$1"
    json_quote "$value"
    config_json="$config_json${config_json:+,}$nl  \"$1\": $quoted"
}

features_json=
features_line=
feature_vars=' '
feature() {  # feature NAME VARIABLE on|off
    state=$3
    if is_set "FEATURE_$2"; then
        value_of "FEATURE_$2"
        case $value in
            on|On|ON|true|True|TRUE|1) state=on ;;
            off|Off|OFF|false|False|FALSE|0) state=off ;;
            *) fail "FEATURE_$2='$value' is not a toggle value; use on or off (true/false and 1/0 work too)" ;;
        esac
        overrides="$overrides${overrides:+,}FEATURE_$2"
    fi
    export "FEATURE_$2=$state"
    feature_vars="$feature_vars$2 "
    if [ "$state" = on ]; then json=true; else json=false; fi
    features_json="$features_json${features_json:+,}$nl  \"$1\": $json"
    features_line="$features_line${features_line:+,}$1:$state"
}

missing=
secrets_line=
secret() {  # secret NAME: from NAME, or read from the file NAME_FILE names
    value_of "$1"
    if [ -n "$value" ]; then
        if is_set "${1}_FILE"; then
            fail "both $1 and ${1}_FILE are set; give the secret one way"
        fi
        secrets_line="$secrets_line${secrets_line:+,}$1"
        return 0
    fi
    value_of "${1}_FILE"
    if [ -z "$value" ]; then
        missing="$missing${missing:+, }$1"
        return 0
    fi
    [ -f "$value" ] && [ -r "$value" ] || fail "${1}_FILE names $value, which is not a readable file"
    secret_value=$(cat -- "$value") || fail "cannot read ${1}_FILE ($value)"
    [ -n "$secret_value" ] || fail "${1}_FILE names $value, which is empty"
    export "$1=$secret_value"
    secret_value=
    secrets_line="$secrets_line${secrets_line:+,}$1(file)"
}

workers_given=  # before the config, which may set WEB_CONCURRENCY itself
! is_set WEB_CONCURRENCY || workers_given=1
. "$dir/env/$env_name.sh"

[ -z "$missing" ] || fail "environment '$env_name' needs secret(s) $missing; pass them at run time" \
    "(docker run -e NAME=... or -e NAME_FILE=/path/to/a/mounted/file)"

export "$variable=$env_name"

# A FEATURE_ variable no toggle answers to is most likely a typo: name it in the start-up line.
ignored=
for name in $(env 2>/dev/null | sed -n 's/^FEATURE_\([A-Za-z0-9_]*\)=.*/\1/p'); do
    case $feature_vars in
        *" $name "*) ;;
        *) ignored="$ignored${ignored:+,}FEATURE_$name" ;;
    esac
done

# --- 4. the files the app can read ----------------------------------------------

uid=$(id -u 2>/dev/null || echo 0)
run_dir=
for candidate in "${IMAGEBUILD_RUN_DIR:-}" /run/imagebuild "${TMPDIR:-/tmp}/imagebuild-$uid" "/dev/shm/imagebuild-$uid"; do
    [ -n "$candidate" ] || continue
    if mkdir -p "$candidate" 2>/dev/null && [ -w "$candidate" ] \
        && printf '{%s\n}\n' "$config_json" > "$candidate/config.json" 2>/dev/null \
        && printf '{%s\n}\n' "$features_json" > "$candidate/features.json" 2>/dev/null; then
        run_dir=$candidate
        break
    fi
    if [ "$candidate" = "${IMAGEBUILD_RUN_DIR:-}" ]; then
        fail "IMAGEBUILD_RUN_DIR=$candidate is not a directory this user ($uid) can write"
    fi
done
if [ -n "$run_dir" ]; then
    export IMAGEBUILD_RUN_DIR="$run_dir"
    files=$run_dir
else
    files="none (no writable directory; mount a tmpfs at /run/imagebuild)"
fi

# --- 5. the machine, the start-up line, the server ----------------------------------

cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
quota=
if [ -r /sys/fs/cgroup/cpu.max ]; then
    read -r quota period < /sys/fs/cgroup/cpu.max || quota=
    [ "$quota" != max ] || quota=
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -r /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
    read -r quota < /sys/fs/cgroup/cpu/cpu.cfs_quota_us || quota=
    read -r period < /sys/fs/cgroup/cpu/cpu.cfs_period_us || quota=
    [ "${quota#-}" = "$quota" ] || quota=
fi
if [ -n "$quota" ] && [ "${period:-0}" -gt 0 ]; then
    limit=$(( (quota + period - 1) / period ))
    [ "$limit" -ge "$cpus" ] || cpus=$limit
fi
[ "$cpus" -ge 1 ] 2>/dev/null || cpus=1
whole() {  # whole NAME: refuse a variable given at start that is not a whole number >= 1
    value_of "$1"
    case $value in
        ''|*[!0-9]*|0) fail "$1='$value' is not a whole number of at least 1" ;;
    esac
}
if is_set IMAGEBUILD_CPUS; then
    whole IMAGEBUILD_CPUS
else
    export IMAGEBUILD_CPUS="$cpus"
fi

workers=
workers_fixed=
workers_per_cpu=
workers_plus=0
port_baked=
port_config=
level_baked=
[ ! -r "$dir/server.sh" ] || . "$dir/server.sh"
if [ -n "${PORT:-}" ]; then
    whole PORT
    [ "$PORT" -le 65535 ] || fail "PORT=$PORT is not a TCP port (1-65535)"
fi
port=$port_baked
[ -z "$port_config" ] || [ -z "${PORT:-}" ] || port=$PORT
level=$level_baked
if [ -n "$level_baked" ]; then  # LOG_LEVEL in nginx's words; another value keeps the baked level
    case ${LOG_LEVEL:-} in
        debug|DEBUG|Debug) level=debug ;;
        info|INFO|Info) level=info ;;
        notice|NOTICE|Notice) level=notice ;;
        warn|WARN|Warn|warning|WARNING|Warning) level=warn ;;
        error|ERROR|Error) level=error ;;
        crit|CRIT|Crit|critical|CRITICAL|Critical) level=crit ;;
    esac
fi
if [ -n "$port_config" ] && { [ "$port" != "$port_baked" ] || [ "$level" != "$level_baked" ]; }; then
    # A server that cannot read PORT or LOG_LEVEL itself (nginx): its config, with
    # the marked listen lines moved to PORT and the marked error_log line at
    # LOG_LEVEL's level, goes to the run directory and replaces the original in
    # the server's arguments.
    [ -n "$run_dir" ] || fail "PORT or LOG_LEVEL needs a writable directory for ${port_config##*/}; mount a tmpfs at /run/imagebuild"
    moved=$run_dir/${port_config##*/}
    sed -e "s/^\([[:space:]]*listen[[:space:]][[:space:]]*\(.*:\)\{0,1\}\)[0-9][0-9]*\(;.*imagebuild:port\)/\1$port\3/" \
        -e "s/^\([[:space:]]*error_log[[:space:]].*[[:space:]]\)[a-z][a-z]*\(;.*imagebuild:log-level\)/\1$level\2/" \
        "$port_config" > "$moved" || fail "cannot write $moved"
    for arg do
        shift
        [ "$arg" != "$port_config" ] || arg=$moved
        set -- "$@" "$arg"
    done
fi
if is_set WEB_CONCURRENCY; then
    whole WEB_CONCURRENCY
    case ,$overrides, in
        *,WEB_CONCURRENCY,*) ;;  # given at start over the environment's config: listed already
        *) [ -z "$workers_given" ] || overrides="$overrides${overrides:+,}WEB_CONCURRENCY" ;;
    esac
    workers=$WEB_CONCURRENCY
elif [ -n "$workers_fixed" ]; then
    workers=$workers_fixed
elif [ -n "$workers_per_cpu" ]; then
    workers=$(( IMAGEBUILD_CPUS * workers_per_cpu + workers_plus ))
fi
[ -z "$workers" ] || export WEB_CONCURRENCY="$workers"

line="$me: environment=$env_name ($how) version=${IMAGEBUILD_VERSION:-unknown}"
line="$line digest=${IMAGEBUILD_IMAGE_DIGEST:-unknown} features=${features_line:-none}"
line="$line overrides=${overrides:-none} secrets=${secrets_line:-none} port=${PORT:-unset}"
line="$line cpus=$IMAGEBUILD_CPUS${workers:+ workers=$workers} files=$files"
[ -z "$ignored" ] || line="$line unknown-toggles=$ignored"
printf '%s\n' "$line" >&2

[ "$#" -gt 0 ] || fail "no server command given"
exec "$@"
