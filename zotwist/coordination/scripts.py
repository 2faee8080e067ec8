# -*- test-case-name: tests.test_coordination,tests.test_s3_blobs -*-
"""
The Lua scripts every Redis lock of the cluster uses to act only on what it
still owns.

A lock in Redis is a key holding its owner's random token (or instance id),
set with C{NX PX}.  Its owner may have been paused past the TTL, and the key
taken by someone else meanwhile: so letting go of it or prolonging it must
compare the token and act in one step on the server, never a C{GET} and then
a C{DEL}.  The fenced repository locks (L{zotwist.coordination.locks}), the
leader lease (L{zotwist.coordination.lease}) and the upload-session locks
(L{zotwist.storage.s3.uploads}) share these two.
"""

#: Compare-and-delete.  KEYS[1] the lock; ARGV[1] the owner's token.
#: Deletes the key only while it holds that token.  Answers 1 when deleted,
#: else 0.
DELETE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Compare-and-pexpire.  KEYS[1] the lock; ARGV[1] the owner's token,
#: ARGV[2] the new TTL in milliseconds.  Prolongs the key only while it
#: holds that token.  Answers 1 when prolonged, else 0.
PEXPIRE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
