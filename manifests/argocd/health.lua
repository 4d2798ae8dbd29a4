-- Argo CD health check for tablerefresh.dev/TableRefresh (argocd-cm key
-- resource.customizations.health.tablerefresh.dev_TableRefresh; argocd-cm-patch.yaml holds this same text).
-- Argo CD sets the global `obj` to the object and takes the table returned: {status = ..., message = ...}.
-- Plain Lua 5.1 (Argo CD runs gopher-lua), tested with lua5.4 by tests/test_argocd_health.py.
--
-- First match wins:
--   1. Progressing  the operator has not observed this generation yet (no status, no
--                   status.observedGeneration, or observedGeneration < metadata.generation): whatever
--                   the status says describes an older spec, including an older spec.suspend.
--   2. Suspended    spec.suspend is true (and observed): no runs by design, so neither "no health check
--                   yet" nor a Ready=False caused by the pause (data going stale) makes it Progressing or
--                   Degraded.
--   3. Degraded     Ready=False; the message is the condition's message (its reason if the message is
--                   empty). Before "no check yet": a Ready=False set before any check (a missing Secret,
--                   ClickHouse unreachable at the first check) must show, not spin as Progressing.
--                   A failed run keeps Ready False until a run succeeds, so a Job that starts after it
--                   does not turn this Progressing (argo-cd #24429): the message names the running Job.
--   4. Progressing  no health check has run yet (status.health.checkedAt absent).
--   5. Healthy      Ready=True.
--   6. Progressing  Ready=Unknown or no Ready condition: the operator has not judged the object (never
--                   Healthy without a Ready=True to show for it).

local function ready_condition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function condition_text(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition.reason ~= nil then
    return condition.reason
  end
  return ""
end

local hs = {}
local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the TableRefresh"
  return hs
end
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed " .. tostring(status.observedGeneration) .. ")"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "TableRefresh is suspended (spec.suspend)"
  return hs
end

local ready = ready_condition(status)
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = condition_text(ready)
  if status.active ~= nil and #status.active > 0 and status.active[1].name ~= nil then
    hs.message = hs.message .. " (Job " .. status.active[1].name .. " is running)"
  end
  return hs
end

if status.health == nil or status.health.checkedAt == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the first health check"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = condition_text(ready)
  return hs
end

hs.status = "Progressing"
if ready == nil then
  hs.message = "Waiting for the Ready condition"
else
  hs.message = "Ready is Unknown: " .. condition_text(ready)
end
return hs
